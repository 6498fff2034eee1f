/**
 * The SQLite catalog's rows as the tables hold them, and their conversion to records. Every row
 * read back is checked as a write is (validate.ts readBack): the file can be written around GCI.
 */

import type {
  DatacenterRecord,
  ImageRecord,
  ImageRefRecord,
  LeaseRecord,
  PlacementRecord,
  PlacementState,
  VmGroupRecord,
  VmRecord,
  VmState,
} from "./types";
import {
  checkDatacenter,
  checkImage,
  checkLease,
  checkPlacement,
  checkVm,
  checkVmGroup,
  readBack,
} from "./validate";

export interface ImageRefRow {
  digest: string;
  datacenter: string;
  holder: string;
  created_at: number;
}
export interface DatacenterRow {
  name: string;
  region: string;
  endpoint: string;
  vcpus: number;
  memory_mib: number;
  heartbeat_at: number;
}
export interface ImageRow {
  digest: string;
  name: string;
  size_bytes: number;
  owner: string;
  created_at: number;
}
export interface PlacementRow {
  digest: string;
  datacenter: string;
  state: string;
  bytes_done: number;
  bytes_total: number;
  error: string;
  updated_at: number;
}
export interface LeaseRow {
  digest: string;
  datacenter: string;
  holder: string;
  expires_at: number;
}
export interface VmGroupRow {
  request_id: string;
  datacenter: string;
  digest: string;
  count: number;
  vcpus: number;
  memory_mib: number;
  created_at: number;
}
export interface VmRow {
  id: string;
  request_id: string;
  datacenter: string;
  digest: string;
  state: string;
  addresses: string;
  updated_at: number;
}

export const toDatacenter = (r: DatacenterRow): DatacenterRecord => ({
  name: r.name,
  region: r.region,
  endpoint: r.endpoint,
  capacity: { vcpus: r.vcpus, memoryMiB: r.memory_mib },
  heartbeatAt: r.heartbeat_at,
});
const toImage = (r: ImageRow): ImageRecord => ({
  digest: r.digest,
  name: r.name,
  sizeBytes: r.size_bytes,
  owner: r.owner,
  createdAt: r.created_at,
});
const toPlacement = (r: PlacementRow): PlacementRecord => ({
  digest: r.digest,
  datacenter: r.datacenter,
  state: r.state as PlacementState,
  bytesDone: r.bytes_done,
  bytesTotal: r.bytes_total,
  error: r.error,
  updatedAt: r.updated_at,
});
export const toLease = (r: LeaseRow): LeaseRecord => ({
  digest: r.digest,
  datacenter: r.datacenter,
  holder: r.holder,
  expiresAt: r.expires_at,
});
export const toVmGroup = (r: VmGroupRow): VmGroupRecord => ({
  requestId: r.request_id,
  datacenter: r.datacenter,
  digest: r.digest,
  count: r.count,
  vcpus: r.vcpus,
  memoryMiB: r.memory_mib,
  createdAt: r.created_at,
});
const toVm = (r: VmRow): VmRecord => ({
  id: r.id,
  requestId: r.request_id,
  datacenter: r.datacenter,
  digest: r.digest,
  state: r.state as VmState,
  addresses: parseAddresses(r.addresses),
  updatedAt: r.updated_at,
});
export const toImageRef = (r: ImageRefRow): ImageRefRecord => ({
  digest: r.digest,
  datacenter: r.datacenter,
  holder: r.holder,
  createdAt: r.created_at,
});

/** The stored addresses; text that is not JSON is kept as it is, for checkVm to refuse by name. */
function parseAddresses(text: string): Record<string, string> {
  try {
    return JSON.parse(text) as Record<string, string>;
  } catch {
    // Not swallowed: the raw text goes on to checkVm, which refuses it as DATA_LOSS naming the VM.
    return text as unknown as Record<string, string>;
  }
}

export const datacenterOut = (r: DatacenterRow): DatacenterRecord =>
  readBack("datacenter", r.name, checkDatacenter, toDatacenter(r));
export const imageOut = (r: ImageRow): ImageRecord => readBack("image", r.digest, checkImage, toImage(r));
export const placementOut = (r: PlacementRow): PlacementRecord =>
  readBack("placement", `${r.digest} in ${r.datacenter}`, checkPlacement, toPlacement(r));
export const leaseOut = (r: LeaseRow): LeaseRecord =>
  readBack("lease", `${r.digest} in ${r.datacenter}`, checkLease, toLease(r));
export const vmGroupOut = (r: VmGroupRow): VmGroupRecord =>
  readBack("VM group", r.request_id, checkVmGroup, toVmGroup(r));
export const vmOut = (r: VmRow): VmRecord => readBack("VM", r.id, checkVm, toVm(r));
