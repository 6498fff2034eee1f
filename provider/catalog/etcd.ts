/**
 * The distributed catalog engine: records as JSON values in an etcd cluster, one key each,
 * under a prefix (default "/gci/v1/"). Read-then-write steps (leases, VM groups, heartbeats)
 * are compare-and-swap transactions on the key's revision, so they are atomic across every
 * client. Each operation is retried as a whole on another member when one fails, so the
 * catalog keeps working while a minority of members is down.
 *
 * Key layout, relative to the prefix (variable parts URI-encoded):
 *   regions/<name>  datacenters/<name>  images/<digest>  placements/<digest>/<dc>
 *   leases/<digest>/<dc>  vmgroups/<requestId>  vms/<id>  imagerefs/<digest>/<dc>/<holder>
 *   alloc/<dc>   rewritten by every write that takes a datacenter's capacity, so such writes
 *                conflict with each other (see allocationGuard)
 */

import { ClientClosedError, Etcd3, IKeyValue, Namespace, isRecoverableError } from "etcd3";

import { GciError, dataLoss, invalid, precondition, unavailable } from "../errors";
import { checkGroupFits, checkGroupUpdate, groupGrows, sameVmGroup } from "./groups";
import { checkHolder, checkImageRef } from "./refs";
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
import {
  BadRecordReporter,
  checkCount,
  checkDatacenter,
  checkDigest,
  checkId,
  checkImage,
  checkLease,
  checkLeaseArgs,
  checkName,
  checkPlacement,
  checkVm,
  checkVmGroup,
  checkVmId,
  leaseLive,
  readAll,
  readBack,
  reportBadRecordOnStderr,
  unknownDatacenter,
} from "./validate";

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

/** Bounds the compare-and-swap loops; each round only fails when another client wrote meanwhile. */
const MAX_CAS_ROUNDS = 50;

const enc = encodeURIComponent;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const byKey =
  <T>(key: (t: T) => string) =>
  (a: T, b: T): number => {
    const x = key(a);
    const y = key(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };

/** The catalog in an etcd cluster, for worlds that span machines. */
export class EtcdCatalog implements Catalog {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly operationTimeoutMs: number;
  private readonly onBadRecord: BadRecordReporter;

  constructor(args: EtcdCatalogArgs) {
    if (!Array.isArray(args.endpoints) || args.endpoints.length === 0) {
      throw invalid(
        `etcd catalog endpoints ${JSON.stringify(args.endpoints)} are empty: list the client endpoint ` +
          `(host:port) of every member, for example ["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"].`,
      );
    }
    this.endpoints = args.endpoints.map((e) => {
      const m = typeof e === "string" ? ENDPOINT.exec(e) : null;
      if (!m) {
        throw invalid(
          `etcd endpoint ${JSON.stringify(e)} is not valid: expected host:port of a member's client URL, ` +
            `for example "127.0.0.1:2379".`,
        );
      }
      return m[1];
    });
    const prefix = args.prefix ?? ETCD_DEFAULT_PREFIX;
    if (!prefix.startsWith("/") || !prefix.endsWith("/") || prefix.length < 2) {
      throw invalid(
        `etcd catalog prefix ${JSON.stringify(prefix)} is not valid: it must start and end with "/", ` +
          `for example "${ETCD_DEFAULT_PREFIX}".`,
      );
    }
    this.prefix = prefix;
    const callTimeoutMs = args.callTimeoutMs ?? 2000;
    this.operationTimeoutMs = args.operationTimeoutMs ?? 20000;
    this.onBadRecord = args.onBadRecord ?? reportBadRecordOnStderr;
    this.client = new Etcd3({
      hosts: this.endpoints.map((e) => `http://${e}`),
      // A deadline on every unary call, so a member that accepts the connection but never
      // answers (no quorum, partitioned) fails over instead of hanging the caller.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
      grpcOptions: {
        // Reconnect quickly to a member that comes back.
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 2000,
      },
    });
    this.ns = this.client.namespace(prefix);
  }

  /**
   * Runs one whole catalog operation, again from the start when a member fails. etcd3 already
   * retries a single request on other members; retrying the operation as a whole also covers a
   * compare-and-swap whose answer was lost, because the rerun reads what actually happened.
   */
  private async run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.operationTimeoutMs;
    let delay = 50;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (GciError.isInstance(e)) throw e;
        const err = e instanceof Error ? e : new Error(String(e));
        if (err instanceof ClientClosedError) {
          throw precondition(`could not ${what}: this etcd catalog client is closed; open a new one.`);
        }
        // etcd3 opens a member's circuit breaker after three failures in a row; when every
        // member's is open it fails at once, though the members may be back in a moment.
        const broken = (err as { isBrokenCircuitError?: boolean }).isBrokenCircuitError === true;
        if (!broken && !isRecoverableError(err)) {
          throw new GciError(
            "INTERNAL",
            `could not ${what} in the etcd catalog at ${this.endpoints.join(",")}: ${err.message}.`,
          );
        }
        if (Date.now() + delay > deadline) {
          throw unavailable(
            `could not ${what}: no member of the etcd catalog at ${this.endpoints.join(",")} answered within ` +
              `${this.operationTimeoutMs} ms (last error: ${err.message}). Check that a majority of the ` +
              `members is running: etcdctl --endpoints=${this.endpoints.join(",")} endpoint health.`,
          );
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  private decode<T>(key: string, value: Buffer | string): T {
    try {
      return JSON.parse(value.toString()) as T;
    } catch (e) {
      throw dataLoss(
        `etcd catalog key "${this.prefix}${key}" does not hold JSON (${(e as Error).message}); ` +
          `delete or repair it with etcdctl.`,
      );
    }
  }

  private async getOne<T>(key: string): Promise<{ value: T; kv: IKeyValue } | undefined> {
    const res = await this.ns.get(key).exec();
    const kv = res.kvs[0];
    return kv && { value: this.decode<T>(key, kv.value), kv };
  }

  private async list<T>(prefix: string): Promise<T[]> {
    const all = await this.ns.getAll().prefix(prefix).strings();
    return Object.entries(all).map(([k, v]) => this.decode<T>(k, v));
  }

  /**
   * The record at `key`, checked as a write is (validate.ts readBack): the cluster can be written
   * around GCI. A bad one is DATA_LOSS naming it.
   */
  private async getChecked<T>(key: string, kind: string, check: (record: T) => T): Promise<T | undefined> {
    const found = await this.getOne<T>(key);
    return found && readBack(kind, this.keyName(key), check, found.value);
  }

  /** The valid records under `prefix`; each bad one is left out and reported. */
  private async listChecked<T>(prefix: string, kind: string, check: (record: T) => T): Promise<T[]> {
    const all = await this.ns.getAll().prefix(prefix).strings();
    return readAll(
      Object.entries(all),
      ([k, v]) => readBack(kind, this.keyName(k), check, this.decode<T>(k, v)),
      this.onBadRecord,
    );
  }

  /** The decoded last part of a key ("vms/proc-1%2F.." -> "proc-1/.."), to name a bad record. */
  private keyName(key: string): string {
    const last = key.slice(key.indexOf("/") + 1);
    try {
      return decodeURIComponent(last);
    } catch {
      return last;
    }
  }

  /** Puts `value` at `key` unless it exists; returns the stored value either way. */
  private async putIfAbsent<T>(key: string, value: T): Promise<T> {
    const tx = await this.ns
      .if(key, "Create", "==", 0)
      .then(this.ns.put(key).value(JSON.stringify(value)))
      .else(this.ns.get(key))
      .commit();
    if (tx.succeeded) return value;
    // The compare and the read run in one transaction, so the key is there.
    const kv = tx.responses[0]?.response_range?.kvs[0];
    if (!kv) throw new GciError("INTERNAL", `etcd answered a failed create of "${key}" without the key.`);
    return this.decode<T>(key, kv.value);
  }

  /**
   * Reads `key`, lets `change` compute the new value (or a result without writing), and
   * writes it only if nobody wrote the key meanwhile; rereads and recomputes otherwise.
   */
  private async cas<T, R>(
    key: string,
    change: (current: T | undefined) => { write?: T | null; result: R },
  ): Promise<R> {
    for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
      const cur = await this.getOne<T>(key);
      const { write, result } = change(cur?.value);
      if (write === undefined) return result;
      const op = write === null ? this.ns.delete().key(key) : this.ns.put(key).value(JSON.stringify(write));
      const guard = cur
        ? this.ns.if(key, "Mod", "==", cur.kv.mod_revision)
        : this.ns.if(key, "Create", "==", 0);
      const tx = await guard.then(op).commit();
      if (tx.succeeded) return result;
    }
    throw casExhausted(key);
  }

  putRegion(name: string): Promise<void> {
    return this.run(`put region ${JSON.stringify(name)}`, async () => {
      checkName("region name", name);
      await this.putIfAbsent(`regions/${enc(name)}`, { name });
    });
  }

  listRegions(): Promise<string[]> {
    return this.run("list regions", async () =>
      (await this.list<{ name: string }>("regions/")).map((r) => r.name).sort(),
    );
  }

  putDatacenter(dc: DatacenterRecord): Promise<void> {
    return this.run(`put datacenter ${JSON.stringify(dc?.name)}`, async () => {
      const d = checkDatacenter(dc);
      const region = `regions/${enc(d.region)}`;
      // One transaction, so a datacenter never exists without its region.
      await this.ns
        .if(region, "Create", "==", 0)
        .then(
          this.ns.put(region).value(JSON.stringify({ name: d.region })),
          this.ns.put(`datacenters/${enc(d.name)}`).value(JSON.stringify(d)),
        )
        .else(this.ns.put(`datacenters/${enc(d.name)}`).value(JSON.stringify(d)))
        .commit();
    });
  }

  getDatacenter(name: string): Promise<DatacenterRecord | undefined> {
    return this.run(`get datacenter ${JSON.stringify(name)}`, async () => {
      checkName("datacenter name", name);
      return this.getChecked(`datacenters/${enc(name)}`, "datacenter", checkDatacenter);
    });
  }

  listDatacenters(region?: string): Promise<DatacenterRecord[]> {
    return this.run("list datacenters", async () => {
      if (region !== undefined) checkName("region name", region);
      const all = await this.listChecked("datacenters/", "datacenter", checkDatacenter);
      return all.filter((d) => region === undefined || d.region === region).sort(byKey((d) => d.name));
    });
  }

  deleteDatacenter(name: string): Promise<void> {
    return this.run(`delete datacenter ${JSON.stringify(name)}`, async () => {
      checkName("datacenter name", name);
      await this.ns.delete().key(`datacenters/${enc(name)}`);
    });
  }

  heartbeat(name: string, at: number): Promise<void> {
    return this.run(`record a heartbeat of datacenter ${JSON.stringify(name)}`, async () => {
      checkName("datacenter name", name);
      checkCount(`heartbeat time of datacenter "${name}"`, at);
      await this.cas<DatacenterRecord, void>(`datacenters/${enc(name)}`, (cur) => {
        if (!cur) throw unknownDatacenter(name);
        return { write: { ...cur, heartbeatAt: at }, result: undefined };
      });
    });
  }

  putImage(image: ImageRecord): Promise<void> {
    return this.run(`put image ${JSON.stringify(image?.digest)}`, async () => {
      const i = checkImage(image);
      await this.putIfAbsent(`images/${enc(i.digest)}`, i);
    });
  }

  getImage(digest: string): Promise<ImageRecord | undefined> {
    return this.run(`get image ${JSON.stringify(digest)}`, async () => {
      checkDigest(digest);
      return this.getChecked(`images/${enc(digest)}`, "image", checkImage);
    });
  }

  listImages(): Promise<ImageRecord[]> {
    return this.run("list images", async () =>
      (await this.listChecked("images/", "image", checkImage)).sort(byKey((i) => i.digest)),
    );
  }

  deleteImage(digest: string): Promise<void> {
    return this.run(`delete image ${JSON.stringify(digest)}`, async () => {
      checkDigest(digest);
      const key = `images/${enc(digest)}`;
      // etcd compares a missing key's version as 0, so the guard always holds; the transaction
      // is there to delete the image and its placements atomically.
      await this.ns
        .if(key, "Version", ">", -1)
        .then(this.ns.delete().key(key), this.ns.delete().prefix(`placements/${enc(digest)}/`))
        .commit();
    });
  }

  putPlacement(p: PlacementRecord): Promise<void> {
    return this.run(
      `put placement of ${JSON.stringify(p?.digest)} in ${JSON.stringify(p?.datacenter)}`,
      async () => {
        const q = checkPlacement(p);
        await this.ns.put(`placements/${enc(q.digest)}/${enc(q.datacenter)}`).value(JSON.stringify(q));
      },
    );
  }

  getPlacement(digest: string, datacenter: string): Promise<PlacementRecord | undefined> {
    return this.run(
      `get placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
      async () => {
        checkDigest(digest);
        checkName("placement datacenter", datacenter);
        return this.getChecked(`placements/${enc(digest)}/${enc(datacenter)}`, "placement", checkPlacement);
      },
    );
  }

  listPlacements(digest?: string): Promise<PlacementRecord[]> {
    return this.run("list placements", async () => {
      const prefix = digest === undefined ? "placements/" : `placements/${enc(checkDigest(digest))}/`;
      return (await this.listChecked(prefix, "placement", checkPlacement)).sort(
        byKey((p) => `${p.digest}\u0000${p.datacenter}`),
      );
    });
  }

  deletePlacement(digest: string, datacenter: string): Promise<void> {
    return this.run(
      `delete placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
      async () => {
        checkDigest(digest);
        checkName("placement datacenter", datacenter);
        await this.ns.delete().key(`placements/${enc(digest)}/${enc(datacenter)}`);
      },
    );
  }

  acquireLease(digest: string, datacenter: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.run(
      `acquire the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
      async () => {
        checkLeaseArgs(digest, datacenter, holder, ttlMs);
        return this.cas<LeaseRecord, boolean>(`leases/${enc(digest)}/${enc(datacenter)}`, (cur) => {
          const now = Date.now();
          if (cur && cur.holder !== holder && leaseLive(cur, now)) return { result: false };
          return { write: { digest, datacenter, holder, expiresAt: now + ttlMs }, result: true };
        });
      },
    );
  }

  getLease(digest: string, datacenter: string): Promise<LeaseRecord | undefined> {
    return this.run(
      `get the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
      async () => {
        checkDigest(digest);
        checkName("lease datacenter", datacenter);
        const cur = await this.getChecked(`leases/${enc(digest)}/${enc(datacenter)}`, "lease", checkLease);
        // An expired lease binds no one, so it reads as free.
        return cur && leaseLive(cur, Date.now()) ? cur : undefined;
      },
    );
  }

  releaseLease(digest: string, datacenter: string, holder: string): Promise<void> {
    return this.run(
      `release the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
      async () => {
        checkLeaseArgs(digest, datacenter, holder);
        await this.cas<LeaseRecord, void>(`leases/${enc(digest)}/${enc(datacenter)}`, (cur) =>
          cur && cur.holder === holder ? { write: null, result: undefined } : { result: undefined },
        );
      },
    );
  }

  putVmGroupIfAbsent(group: VmGroupRecord): Promise<VmGroupRecord> {
    return this.run(`put VM group ${JSON.stringify(group?.requestId)}`, async () => {
      const g = checkVmGroup(group);
      const stored = await this.putIfAbsent(`vmgroups/${enc(g.requestId)}`, g);
      return readBack("VM group", g.requestId, checkVmGroup, stored);
    });
  }

  createVmGroup(group: VmGroupRecord): Promise<CreatedVmGroup> {
    return this.run(`create VM group ${JSON.stringify(group?.requestId)}`, async () => {
      const g = checkVmGroup(group);
      const key = `vmgroups/${enc(g.requestId)}`;
      for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
        const room = await this.readRoom(g.datacenter);
        const stored = await this.getOne<VmGroupRecord>(key);
        // Equal to ours: our own commit, whose answer was lost and the operation rerun.
        if (stored) return { group: stored.value, created: sameVmGroup(stored.value, g) };
        checkGroupFits(room.dc, room.groups, g);
        const tx = await room.guard
          .and(key, "Create", "==", 0)
          .then(this.ns.put(key).value(JSON.stringify(g)), room.bump)
          .commit();
        if (tx.succeeded) return { group: g, created: true };
      }
      throw casExhausted(key);
    });
  }

  updateVmGroup(expected: VmGroupRecord, next: VmGroupRecord): Promise<boolean> {
    return this.run(`update VM group ${JSON.stringify(expected?.requestId)}`, async () => {
      const e = checkVmGroup(expected);
      const n = checkVmGroup(next);
      checkGroupUpdate(e, n);
      const key = `vmgroups/${enc(e.requestId)}`;
      for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
        const room = groupGrows(e, n) ? await this.readRoom(n.datacenter) : undefined;
        const stored = await this.getOne<VmGroupRecord>(key);
        if (stored && sameVmGroup(stored.value, n)) return true;
        if (!stored || !sameVmGroup(stored.value, e)) return false;
        const write = this.ns.put(key).value(JSON.stringify(n));
        let tx;
        if (room) {
          checkGroupFits(room.dc, room.groups, n);
          tx = await room.guard.and(key, "Mod", "==", stored.kv.mod_revision).then(write, room.bump).commit();
        } else {
          tx = await this.ns.if(key, "Mod", "==", stored.kv.mod_revision).then(write).commit();
        }
        if (tx.succeeded) return true;
      }
      throw casExhausted(key);
    });
  }

  /**
   * A datacenter's capacity and groups, read after its allocation key, with the guard that
   * holds only while neither the datacenter record nor the allocation key changed, and the
   * write that bumps the key. Any later capacity-taking write bumps it, so a transaction
   * under this guard commits only if no such write came in since these reads; deletes do not
   * bump it, and only free room, so missing one errs on the safe side.
   */
  private async readRoom(datacenter: string): Promise<{
    dc: DatacenterRecord;
    groups: VmGroupRecord[];
    guard: ReturnType<Namespace["if"]>;
    bump: ReturnType<Namespace["put"]>;
  }> {
    const allocKey = `alloc/${enc(datacenter)}`;
    const dcKey = `datacenters/${enc(datacenter)}`;
    const alloc = await this.getOne<{ at: number }>(allocKey);
    const dc = await this.getOne<DatacenterRecord>(dcKey);
    if (!dc) throw unknownDatacenter(datacenter);
    const groups = (await this.list<VmGroupRecord>("vmgroups/")).filter((g) => g.datacenter === datacenter);
    const guard = alloc
      ? this.ns.if(allocKey, "Mod", "==", alloc.kv.mod_revision)
      : this.ns.if(allocKey, "Create", "==", 0);
    return {
      dc: dc.value,
      groups,
      guard: guard.and(dcKey, "Mod", "==", dc.kv.mod_revision),
      bump: this.ns.put(allocKey).value(JSON.stringify({ at: Date.now() })),
    };
  }

  getVmGroup(requestId: string): Promise<VmGroupRecord | undefined> {
    return this.run(`get VM group ${JSON.stringify(requestId)}`, async () => {
      checkId("VM group request id", requestId);
      return this.getChecked(`vmgroups/${enc(requestId)}`, "VM group", checkVmGroup);
    });
  }

  listVmGroups(datacenter?: string): Promise<VmGroupRecord[]> {
    return this.run("list VM groups", async () => {
      if (datacenter !== undefined) checkName("datacenter name", datacenter);
      const all = await this.listChecked("vmgroups/", "VM group", checkVmGroup);
      return all
        .filter((g) => datacenter === undefined || g.datacenter === datacenter)
        .sort(byKey((g) => g.requestId));
    });
  }

  deleteVmGroup(requestId: string): Promise<void> {
    return this.run(`delete VM group ${JSON.stringify(requestId)}`, async () => {
      checkId("VM group request id", requestId);
      await this.ns.delete().key(`vmgroups/${enc(requestId)}`);
    });
  }

  putImageRef(ref: ImageRefRecord): Promise<void> {
    return this.run(
      `claim image ${JSON.stringify(ref?.digest)} in ${JSON.stringify(ref?.datacenter)}`,
      async () => {
        const r = checkImageRef(ref);
        await this.ns.put(imageRefKey(r.digest, r.datacenter, r.holder)).value(JSON.stringify(r));
      },
    );
  }

  deleteImageRef(digest: string, datacenter: string, holder: string): Promise<void> {
    return this.run(
      `release the claim on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
      async () => {
        checkDigest(digest);
        checkName("claim datacenter", datacenter);
        checkHolder(holder);
        await this.ns.delete().key(imageRefKey(digest, datacenter, holder));
      },
    );
  }

  listImageRefs(digest: string): Promise<ImageRefRecord[]> {
    return this.run(`list the claims on ${JSON.stringify(digest)}`, async () => {
      const refs = await this.list<ImageRefRecord>(`imagerefs/${enc(checkDigest(digest))}/`);
      return refs.sort(byKey((r) => `${r.datacenter}\u0000${r.holder}`));
    });
  }

  putVm(vm: VmRecord): Promise<void> {
    return this.run(`put VM ${JSON.stringify(vm?.id)}`, async () => {
      const v = checkVm(vm);
      await this.ns.put(`vms/${enc(v.id)}`).value(JSON.stringify(v));
    });
  }

  getVm(id: string): Promise<VmRecord | undefined> {
    return this.run(`get VM ${JSON.stringify(id)}`, async () => {
      checkVmId("VM id", id);
      return this.getChecked(`vms/${enc(id)}`, "VM", checkVm);
    });
  }

  listVms(filter?: { datacenter?: string; requestId?: string }): Promise<VmRecord[]> {
    return this.run("list VMs", async () => {
      const dc = filter?.datacenter;
      const req = filter?.requestId;
      if (dc !== undefined) checkName("datacenter name", dc);
      if (req !== undefined) checkId("VM request id", req);
      const all = await this.listChecked("vms/", "VM", checkVm);
      return all
        .filter(
          (v) => (dc === undefined || v.datacenter === dc) && (req === undefined || v.requestId === req),
        )
        .sort(byKey((v) => v.id));
    });
  }

  deleteVm(id: string): Promise<void> {
    return this.run(`delete VM ${JSON.stringify(id)}`, async () => {
      checkVmId("VM id", id);
      await this.ns.delete().key(`vms/${enc(id)}`);
    });
  }

  close(): Promise<void> {
    this.client.close();
    return Promise.resolve();
  }
}

function imageRefKey(digest: string, datacenter: string, holder: string): string {
  return `imagerefs/${enc(digest)}/${enc(datacenter)}/${enc(holder)}`;
}

function casExhausted(key: string): GciError {
  return unavailable(
    `etcd catalog key "${key}" kept changing under ${MAX_CAS_ROUNDS} attempts to update it; ` +
      `too many writers contend for it. Retry later.`,
  );
}
