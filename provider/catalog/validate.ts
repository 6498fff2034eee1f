/**
 * Input checks shared by both catalog engines, so SQLite and etcd reject exactly the same
 * values with exactly the same messages. Each check throws an INVALID_ARGUMENT GciError that
 * quotes the bad value and says what is expected.
 * @internal
 */

import { dataLoss, GciError, invalid, notFound } from "../common/errors";
import { DIGEST_PATTERN as DIGEST } from "../common/digest";
import type {
  DatacenterRecord,
  ImageRecord,
  LeaseRecord,
  PlacementRecord,
  PlacementState,
  VmGroupRecord,
  VmRecord,
  VmState,
} from "./types";

const NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const ENDPOINT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const MAX_ID = 512;
/**
 * A VM id, exactly the format instanceId() (daemon/instances.ts) makes: "vm-" or "proc-", 10 hex
 * digits of the start request's hash, the instance's index. It names the run folder
 * <data>/instances/<id>, a cgroup and QEMU's -name, so nothing else is accepted.
 */
const VM_ID = /^(vm|proc)-[0-9a-f]{10}-(0|[1-9][0-9]{0,5})$/;
/**
 * A request id or a lease holder: a UUID, a derived id ("vmg-<hash>-scale-1-3", "start-…"), a
 * URN, "<datacenter>/<pid>/<uuid>". Letters, digits and . _ : / @ + = $ -, starting with a letter
 * or digit, never "..": no spaces, quotes, backslashes or control characters. Request ids are
 * hashed before they name anything on disk; the pattern keeps them inert in logs and arguments too.
 */
const TOKEN = /^[A-Za-z0-9][A-Za-z0-9._:/@+=$-]*$/;

export const PLACEMENT_STATES: readonly PlacementState[] = ["present", "transferring", "failed"];
export const VM_STATES: readonly VmState[] = [
  "provisioning",
  "booting",
  "running",
  "stopping",
  "stopped",
  "failed",
];

const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(v));

/** A region or datacenter name: a DNS-label-like word, 1–63 characters. */
export function checkName(what: string, value: unknown): string {
  if (typeof value !== "string" || !NAME.test(value)) {
    throw invalid(
      `${what} ${show(value)} is not a valid name: use 1-63 letters, digits, '.', '_' or '-', ` +
        `starting and ending with a letter or digit (for example "eu-west-1a").`,
    );
  }
  return value;
}

/** An image digest: "sha256:" and 64 lowercase hex digits. */
export function checkDigest(value: unknown): string {
  if (typeof value !== "string" || !DIGEST.test(value)) {
    throw invalid(
      `image digest ${show(value)} is not valid: expected "sha256:" followed by 64 lowercase hex digits, ` +
        `the sha256 of the whole image archive.`,
    );
  }
  return value;
}

/** A request id or lease holder (see TOKEN): 1-512 characters. */
export function checkId(what: string, value: unknown): string {
  if (typeof value !== "string" || value.length > MAX_ID || !TOKEN.test(value) || value.includes("..")) {
    throw invalid(
      `${what} ${show(value)} is not valid: use 1-${MAX_ID} letters, digits or . _ : / @ + = $ -, ` +
        `starting with a letter or digit and without ".." (a UUID is a good choice).`,
    );
  }
  return value;
}

/** A VM id as instanceId() makes it, e.g. "proc-3f2a9c01de-0". */
export function checkVmId(what: string, value: unknown): string {
  if (typeof value !== "string" || !VM_ID.test(value)) {
    throw invalid(
      `${what} ${show(value)} is not valid: a VM id is "vm-" or "proc-", 10 hex digits and an index, ` +
        `for example "proc-3f2a9c01de-0"; copy it from \`gci vm ls\`.`,
    );
  }
  return value;
}

/** A count, size or timestamp: a non-negative safe integer. */
export function checkCount(what: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(`${what} ${show(value)} is not valid: expected a whole number of at least 0.`);
  }
  return value;
}

/** Whether a value is a cluster manager's host:port, with a port from 1 to 65535. */
export function isEndpoint(value: unknown): value is string {
  const m = typeof value === "string" ? ENDPOINT.exec(value) : null;
  return m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
}

/** A strictly positive safe integer. */
export function checkPositive(what: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw invalid(`${what} ${show(value)} is not valid: expected a whole number greater than 0.`);
  }
  return value;
}

function checkOneOf<T extends string>(what: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw invalid(`${what} ${show(value)} is not valid: expected one of ${allowed.join(", ")}.`);
  }
  return value as T;
}

export function checkDatacenter(dc: DatacenterRecord): DatacenterRecord {
  checkName("datacenter name", dc.name);
  checkName(`region of datacenter "${dc.name}"`, dc.region);
  if (!isEndpoint(dc.endpoint)) {
    throw invalid(
      `endpoint ${show(dc.endpoint)} of datacenter "${dc.name}" is not valid: expected host:port ` +
        `of its cluster manager (port 1-65535), for example "127.0.0.1:50051".`,
    );
  }
  if (typeof dc.capacity !== "object" || dc.capacity === null) {
    throw invalid(`capacity of datacenter "${dc.name}" is missing: give { vcpus, memoryMiB }.`);
  }
  checkCount(`capacity.vcpus of datacenter "${dc.name}"`, dc.capacity.vcpus);
  checkCount(`capacity.memoryMiB of datacenter "${dc.name}"`, dc.capacity.memoryMiB);
  checkCount(`heartbeatAt of datacenter "${dc.name}"`, dc.heartbeatAt);
  return {
    name: dc.name,
    region: dc.region,
    endpoint: dc.endpoint,
    capacity: { vcpus: dc.capacity.vcpus, memoryMiB: dc.capacity.memoryMiB },
    heartbeatAt: dc.heartbeatAt,
  };
}

export function checkImage(image: ImageRecord): ImageRecord {
  checkDigest(image.digest);
  if (typeof image.name !== "string" || CONTROL.test(image.name) || image.name.length > MAX_ID) {
    throw invalid(
      `name ${show(image.name)} of image ${image.digest} is not valid: use up to ${MAX_ID} printable characters.`,
    );
  }
  if (typeof image.owner !== "string" || CONTROL.test(image.owner) || image.owner.length > MAX_ID) {
    throw invalid(
      `owner ${show(image.owner)} of image ${image.digest} is not valid: use up to ${MAX_ID} printable characters.`,
    );
  }
  checkCount(`sizeBytes of image ${image.digest}`, image.sizeBytes);
  checkCount(`createdAt of image ${image.digest}`, image.createdAt);
  return {
    digest: image.digest,
    name: image.name,
    sizeBytes: image.sizeBytes,
    owner: image.owner,
    createdAt: image.createdAt,
  };
}

export function checkPlacement(p: PlacementRecord): PlacementRecord {
  checkDigest(p.digest);
  checkName("placement datacenter", p.datacenter);
  const where = `placement of ${p.digest} in "${p.datacenter}"`;
  checkOneOf(`state of ${where}`, p.state, PLACEMENT_STATES);
  checkCount(`bytesDone of ${where}`, p.bytesDone);
  checkCount(`bytesTotal of ${where}`, p.bytesTotal);
  if (typeof p.error !== "string") {
    throw invalid(`error of ${where} is ${show(p.error)}: give a string ("" when there is no error).`);
  }
  checkCount(`updatedAt of ${where}`, p.updatedAt);
  return {
    digest: p.digest,
    datacenter: p.datacenter,
    state: p.state,
    bytesDone: p.bytesDone,
    bytesTotal: p.bytesTotal,
    error: p.error,
    updatedAt: p.updatedAt,
  };
}

/** The key of a placement: an image digest and a datacenter name. */
export function checkPlacementKey(digest: string, datacenter: string): void {
  checkDigest(digest);
  checkName("placement datacenter", datacenter);
}

/** The key of a lease: an image digest and a datacenter name. */
export function checkLeaseKey(digest: string, datacenter: string): void {
  checkDigest(digest);
  checkName("lease datacenter", datacenter);
}

export function checkLeaseArgs(digest: string, datacenter: string, holder: string, ttlMs?: number): void {
  checkLeaseKey(digest, datacenter);
  checkId("lease holder", holder);
  if (ttlMs !== undefined) checkPositive("lease ttlMs", ttlMs);
}

/** A heartbeat: the datacenter's name and the time it was sent. */
export function checkHeartbeat(name: string, at: number): void {
  checkName("datacenter name", name);
  checkCount(`heartbeat time of datacenter "${name}"`, at);
}

/** The filter of a VM list: each given field checked as the record's own field is. */
export function checkVmFilter(filter?: { datacenter?: string; requestId?: string }): void {
  if (filter?.datacenter !== undefined) checkName("datacenter name", filter.datacenter);
  if (filter?.requestId !== undefined) checkId("VM request id", filter.requestId);
}

export function checkVmGroup(g: VmGroupRecord): VmGroupRecord {
  checkId("VM group request id", g.requestId);
  const where = `VM group "${g.requestId}"`;
  checkName(`datacenter of ${where}`, g.datacenter);
  checkDigest(g.digest);
  checkCount(`count of ${where}`, g.count);
  checkCount(`vcpus of ${where}`, g.vcpus);
  checkCount(`memoryMiB of ${where}`, g.memoryMiB);
  checkCount(`createdAt of ${where}`, g.createdAt);
  return {
    requestId: g.requestId,
    datacenter: g.datacenter,
    digest: g.digest,
    count: g.count,
    vcpus: g.vcpus,
    memoryMiB: g.memoryMiB,
    createdAt: g.createdAt,
  };
}

export function checkVm(vm: VmRecord): VmRecord {
  checkVmId("VM id", vm.id);
  const where = `VM "${vm.id}"`;
  checkId(`request id of ${where}`, vm.requestId);
  checkName(`datacenter of ${where}`, vm.datacenter);
  checkDigest(vm.digest);
  checkOneOf(`state of ${where}`, vm.state, VM_STATES);
  if (typeof vm.addresses !== "object" || vm.addresses === null || Array.isArray(vm.addresses)) {
    throw invalid(`addresses of ${where} is ${show(vm.addresses)}: give an object, guest port -> host:port.`);
  }
  for (const [port, addr] of Object.entries(vm.addresses)) {
    if (typeof addr !== "string") {
      throw invalid(
        `address for guest port ${port} of ${where} is ${show(addr)}: give a "host:port" string.`,
      );
    }
  }
  checkCount(`updatedAt of ${where}`, vm.updatedAt);
  return {
    id: vm.id,
    requestId: vm.requestId,
    datacenter: vm.datacenter,
    digest: vm.digest,
    state: vm.state,
    addresses: { ...vm.addresses },
    updatedAt: vm.updatedAt,
  };
}

export function checkLease(lease: LeaseRecord): LeaseRecord {
  checkLeaseArgs(lease.digest, lease.datacenter, lease.holder);
  checkCount(`expiresAt of the lease on ${lease.digest} in "${lease.datacenter}"`, lease.expiresAt);
  return { ...lease };
}

/** Told about each record a list skipped because it is not valid (see readAll). */
export type BadRecordReporter = (error: GciError) => void;

/** The default reporter: one JSON line on stderr, so a skipped record is never silent. */
export const reportBadRecordOnStderr: BadRecordReporter = (error) => {
  process.stderr.write(
    JSON.stringify({
      ts: new Date().toISOString(),
      level: "warn",
      event: "catalog.bad_record",
      error: error.message,
    }) + "\n",
  );
};

/**
 * A record read back from the catalog, checked exactly as a write is: the catalog file or
 * cluster can be written around GCI, and its ids become paths and arguments of a root daemon.
 * A bad record is DATA_LOSS naming it.
 */
export function readBack<T>(kind: string, key: unknown, check: (record: T) => T, record: T): T {
  try {
    if (typeof record !== "object" || record === null) throw invalid(`it is ${show(record)}, not a record`);
    return check(record);
  } catch (e) {
    throw dataLoss(
      `${kind} ${show(key)} in the catalog is not valid and was not used: ${(e as Error).message} ` +
        `It was not written by GCI: delete or repair that record in the catalog by hand.`,
    );
  }
}

/**
 * The records of a list read back from the catalog, each through `read` (which uses readBack);
 * each bad one is left out and told to `onBad`, so one forged record does not stop the others.
 */
export function readAll<R, T>(rows: readonly R[], read: (row: R) => T, onBad: BadRecordReporter): T[] {
  const good: T[] = [];
  for (const row of rows) {
    try {
      good.push(read(row));
    } catch (e) {
      if (!GciError.isInstance(e) || e.code !== "DATA_LOSS") throw e;
      onBad(e);
    }
  }
  return good;
}

/** The error for a heartbeat from a datacenter the catalog does not know. */
export function unknownDatacenter(name: string): GciError {
  return notFound(
    `datacenter "${name}" is not in the catalog: register it with putDatacenter before sending heartbeats.`,
  );
}
