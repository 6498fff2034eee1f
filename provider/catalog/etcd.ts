/**
 * The distributed catalog engine: records as JSON values in an etcd cluster, one key each,
 * under a prefix (default "/gci/v1/"). Read-then-write steps (leases, VM groups, heartbeats)
 * are compare-and-swap transactions on the key's revision, so they are atomic across every
 * client. Each operation is retried as a whole on another member when one fails, so the
 * catalog keeps working while a minority of members is down.
 *
 * This file is the engine's face; its parts live beside it: etcd-store.ts (the client, the
 * retry and the transaction helpers), etcd-keys.ts (the key layout), and one module per kind
 * of record (etcd-topology, -images, -leases, -groups).
 */

import { invalid } from "../common/errors";
import * as groups from "./etcd-groups";
import * as images from "./etcd-images";
import * as leases from "./etcd-leases";
import { EtcdStore } from "./etcd-store";
import * as topology from "./etcd-topology";
import type {
  Catalog,
  CreatedVmGroup,
  DatacenterRecord,
  ImageRefRecord,
  ImageRecord,
  LeaseRecord,
  PlacementRecord,
  VmGroupRecord,
  VmRecord,
} from "./types";
import { BadRecordReporter, reportBadRecordOnStderr } from "./validate";

/** Options for {@link EtcdCatalog}. */
export interface EtcdCatalogArgs {
  /** Client endpoints of every member, "host:port" (an "http://" prefix is accepted). */
  readonly endpoints: readonly string[];
  /**
   * Key prefix that holds this catalog; must start and end with "/".
   * @default "/gci/v1/"
   */
  readonly prefix?: string;
  /**
   * Deadline of one request to one member, in milliseconds. A write sent to a follower just
   * as the leader dies is lost and never answered, so this bounds the pause a leader crash
   * causes; every operation is safe to resend.
   * @default 2000
   */
  readonly callTimeoutMs?: number;
  /**
   * How long one catalog operation keeps retrying on other members before it fails
   * with UNAVAILABLE, in milliseconds.
   * @default 20000
   */
  readonly operationTimeoutMs?: number;
  /**
   * Told about each record a list leaves out because it is not valid (written around GCI).
   * @default one JSON line on stderr
   */
  readonly onBadRecord?: BadRecordReporter;
}

/** The default key prefix of an etcd catalog. */
export const ETCD_DEFAULT_PREFIX = "/gci/v1/";

const ENDPOINT = /^(?:https?:\/\/)?((?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5})$/;

/** The endpoints as host:port, or INVALID_ARGUMENT naming the first bad one. */
function checkEndpoints(endpoints: readonly string[]): string[] {
  if (!Array.isArray(endpoints) || endpoints.length === 0) {
    throw invalid(
      `etcd catalog endpoints ${JSON.stringify(endpoints)} are empty: list the client endpoint ` +
        `(host:port) of every member, for example ["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"].`,
    );
  }
  return endpoints.map((e) => {
    const m = typeof e === "string" ? ENDPOINT.exec(e) : null;
    if (!m) {
      throw invalid(
        `etcd endpoint ${JSON.stringify(e)} is not valid: expected host:port of a member's client URL, ` +
          `for example "127.0.0.1:2379".`,
      );
    }
    return m[1];
  });
}

/** The key prefix, or INVALID_ARGUMENT unless it starts and ends with "/". */
function checkPrefix(prefix: string): string {
  if (!prefix.startsWith("/") || !prefix.endsWith("/") || prefix.length < 2) {
    throw invalid(
      `etcd catalog prefix ${JSON.stringify(prefix)} is not valid: it must start and end with "/", ` +
        `for example "${ETCD_DEFAULT_PREFIX}".`,
    );
  }
  return prefix;
}

/** The catalog in an etcd cluster, for worlds that span machines. */
export class EtcdCatalog implements Catalog {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  private readonly store: EtcdStore;

  constructor(args: EtcdCatalogArgs) {
    this.endpoints = checkEndpoints(args.endpoints);
    this.prefix = checkPrefix(args.prefix ?? ETCD_DEFAULT_PREFIX);
    this.store = new EtcdStore({
      endpoints: this.endpoints,
      prefix: this.prefix,
      callTimeoutMs: args.callTimeoutMs ?? 2000,
      operationTimeoutMs: args.operationTimeoutMs ?? 20000,
      onBadRecord: args.onBadRecord ?? reportBadRecordOnStderr,
    });
  }

  putRegion(name: string): Promise<void> {
    return topology.putRegion(this.store, name);
  }
  listRegions(): Promise<string[]> {
    return topology.listRegions(this.store);
  }
  putDatacenter(dc: DatacenterRecord): Promise<void> {
    return topology.putDatacenter(this.store, dc);
  }
  getDatacenter(name: string): Promise<DatacenterRecord | undefined> {
    return topology.getDatacenter(this.store, name);
  }
  listDatacenters(region?: string): Promise<DatacenterRecord[]> {
    return topology.listDatacenters(this.store, region);
  }
  deleteDatacenter(name: string): Promise<void> {
    return topology.deleteDatacenter(this.store, name);
  }
  heartbeat(name: string, at: number): Promise<void> {
    return topology.heartbeat(this.store, name, at);
  }

  putImage(image: ImageRecord): Promise<void> {
    return images.putImage(this.store, image);
  }
  getImage(digest: string): Promise<ImageRecord | undefined> {
    return images.getImage(this.store, digest);
  }
  listImages(): Promise<ImageRecord[]> {
    return images.listImages(this.store);
  }
  deleteImage(digest: string): Promise<void> {
    return images.deleteImage(this.store, digest);
  }
  putPlacement(p: PlacementRecord): Promise<void> {
    return images.putPlacement(this.store, p);
  }
  getPlacement(digest: string, datacenter: string): Promise<PlacementRecord | undefined> {
    return images.getPlacement(this.store, digest, datacenter);
  }
  listPlacements(digest?: string): Promise<PlacementRecord[]> {
    return images.listPlacements(this.store, digest);
  }
  deletePlacement(digest: string, datacenter: string): Promise<void> {
    return images.deletePlacement(this.store, digest, datacenter);
  }
  putImageRef(ref: ImageRefRecord): Promise<void> {
    return images.putImageRef(this.store, ref);
  }
  deleteImageRef(digest: string, datacenter: string, holder: string): Promise<void> {
    return images.deleteImageRef(this.store, digest, datacenter, holder);
  }
  listImageRefs(digest: string): Promise<ImageRefRecord[]> {
    return images.listImageRefs(this.store, digest);
  }

  acquireLease(digest: string, datacenter: string, holder: string, ttlMs: number): Promise<boolean> {
    return leases.acquireLease(this.store, digest, datacenter, holder, ttlMs);
  }
  getLease(digest: string, datacenter: string): Promise<LeaseRecord | undefined> {
    return leases.getLease(this.store, digest, datacenter);
  }
  releaseLease(digest: string, datacenter: string, holder: string): Promise<void> {
    return leases.releaseLease(this.store, digest, datacenter, holder);
  }

  putVmGroupIfAbsent(group: VmGroupRecord): Promise<VmGroupRecord> {
    return groups.putVmGroupIfAbsent(this.store, group);
  }
  createVmGroup(group: VmGroupRecord): Promise<CreatedVmGroup> {
    return groups.createVmGroup(this.store, group);
  }
  updateVmGroup(expected: VmGroupRecord, next: VmGroupRecord): Promise<boolean> {
    return groups.updateVmGroup(this.store, expected, next);
  }
  getVmGroup(requestId: string): Promise<VmGroupRecord | undefined> {
    return groups.getVmGroup(this.store, requestId);
  }
  listVmGroups(datacenter?: string): Promise<VmGroupRecord[]> {
    return groups.listVmGroups(this.store, datacenter);
  }
  deleteVmGroup(requestId: string): Promise<void> {
    return groups.deleteVmGroup(this.store, requestId);
  }
  putVm(vm: VmRecord): Promise<void> {
    return groups.putVm(this.store, vm);
  }
  getVm(id: string): Promise<VmRecord | undefined> {
    return groups.getVm(this.store, id);
  }
  listVms(filter?: { datacenter?: string; requestId?: string }): Promise<VmRecord[]> {
    return groups.listVms(this.store, filter);
  }
  deleteVm(id: string): Promise<void> {
    return groups.deleteVm(this.store, id);
  }

  close(): Promise<void> {
    this.store.close();
    return Promise.resolve();
  }
}
