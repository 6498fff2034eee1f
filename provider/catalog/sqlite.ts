/**
 * The embedded catalog engine: one SQLite file shared by every cluster manager of a world on
 * one machine. WAL lets readers run beside the one writer; busy_timeout makes a writer wait for
 * another process instead of failing; read-then-write steps run in BEGIN IMMEDIATE transactions
 * so two processes cannot both decide they won.
 */

import * as fs from "fs";
import * as path from "path";
import Database from "better-sqlite3";

import { GciError, invalid, precondition, unavailable } from "../errors";
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
  PlacementState,
  VmGroupRecord,
  VmRecord,
  VmState,
} from "./types";
import {
  BadRecordReporter,
  checkDatacenter,
  checkDigest,
  checkCount,
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

/** The schema this code writes; stored in the file's user_version pragma. */
export const SQLITE_SCHEMA_VERSION = 2;

/** Options for {@link SqliteCatalog}. */
export interface SqliteCatalogArgs {
  /** Absolute path of the catalog file; its directory is created if missing. */
  readonly path: string;
  /**
   * How long a write waits for another process's write to finish, in milliseconds.
   * @default 5000
   */
  readonly busyTimeoutMs?: number;
  /**
   * Told about each record a list leaves out because it is not valid (written around GCI).
   * @default one JSON line on stderr
   */
  readonly onBadRecord?: BadRecordReporter;
}

const SCHEMA_V1 = `
CREATE TABLE IF NOT EXISTS regions (
  name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datacenters (
  name TEXT PRIMARY KEY,
  region TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  vcpus INTEGER NOT NULL,
  memory_mib INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS datacenters_region ON datacenters (region, name);
CREATE TABLE IF NOT EXISTS images (
  digest TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  owner TEXT NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS placements (
  digest TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  state TEXT NOT NULL,
  bytes_done INTEGER NOT NULL,
  bytes_total INTEGER NOT NULL,
  error TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (digest, datacenter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
  digest TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  holder TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (digest, datacenter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vm_groups (
  request_id TEXT PRIMARY KEY,
  datacenter TEXT NOT NULL,
  digest TEXT NOT NULL,
  count INTEGER NOT NULL,
  vcpus INTEGER NOT NULL,
  memory_mib INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vm_groups_datacenter ON vm_groups (datacenter, request_id);
CREATE TABLE IF NOT EXISTS vms (
  id TEXT PRIMARY KEY,
  request_id TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  digest TEXT NOT NULL,
  state TEXT NOT NULL,
  addresses TEXT NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vms_datacenter ON vms (datacenter, id);
CREATE INDEX IF NOT EXISTS vms_request ON vms (request_id, id);
`;

/** Version 2: claims on image copies (who needs a copy, so it is not deleted under them). */
const SCHEMA_V2 = `
CREATE TABLE IF NOT EXISTS image_refs (
  digest TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  holder TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (digest, datacenter, holder)
) WITHOUT ROWID;
`;

interface ImageRefRow {
  digest: string;
  datacenter: string;
  holder: string;
  created_at: number;
}

interface DatacenterRow {
  name: string;
  region: string;
  endpoint: string;
  vcpus: number;
  memory_mib: number;
  heartbeat_at: number;
}
interface ImageRow {
  digest: string;
  name: string;
  size_bytes: number;
  owner: string;
  created_at: number;
}
interface PlacementRow {
  digest: string;
  datacenter: string;
  state: string;
  bytes_done: number;
  bytes_total: number;
  error: string;
  updated_at: number;
}
interface LeaseRow {
  digest: string;
  datacenter: string;
  holder: string;
  expires_at: number;
}
interface VmGroupRow {
  request_id: string;
  datacenter: string;
  digest: string;
  count: number;
  vcpus: number;
  memory_mib: number;
  created_at: number;
}
interface VmRow {
  id: string;
  request_id: string;
  datacenter: string;
  digest: string;
  state: string;
  addresses: string;
  updated_at: number;
}

const toDatacenter = (r: DatacenterRow): DatacenterRecord => ({
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
const toLease = (r: LeaseRow): LeaseRecord => ({
  digest: r.digest,
  datacenter: r.datacenter,
  holder: r.holder,
  expiresAt: r.expires_at,
});
const toVmGroup = (r: VmGroupRow): VmGroupRecord => ({
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

/** The stored addresses; text that is not JSON is kept as it is, for checkVm to refuse by name. */
function parseAddresses(text: string): Record<string, string> {
  try {
    return JSON.parse(text) as Record<string, string>;
  } catch {
    return text as unknown as Record<string, string>;
  }
}

// Every row read back is checked as a write is (validate.ts readBack): the file can be written around GCI.
const datacenterOut = (r: DatacenterRow): DatacenterRecord =>
  readBack("datacenter", r.name, checkDatacenter, toDatacenter(r));
const imageOut = (r: ImageRow): ImageRecord => readBack("image", r.digest, checkImage, toImage(r));
const placementOut = (r: PlacementRow): PlacementRecord =>
  readBack("placement", `${r.digest} in ${r.datacenter}`, checkPlacement, toPlacement(r));
const leaseOut = (r: LeaseRow): LeaseRecord =>
  readBack("lease", `${r.digest} in ${r.datacenter}`, checkLease, toLease(r));
const vmGroupOut = (r: VmGroupRow): VmGroupRecord =>
  readBack("VM group", r.request_id, checkVmGroup, toVmGroup(r));
const vmOut = (r: VmRow): VmRecord => readBack("VM", r.id, checkVm, toVm(r));

/** The catalog in one SQLite file, safe to share between processes on one machine. */
export class SqliteCatalog implements Catalog {
  readonly path: string;
  private readonly db: Database.Database;
  private readonly busyTimeoutMs: number;
  private readonly statements = new Map<string, Database.Statement>();
  private readonly onBadRecord: BadRecordReporter;

  constructor(args: SqliteCatalogArgs) {
    if (typeof args.path !== "string" || !path.isAbsolute(args.path)) {
      throw invalid(
        `SQLite catalog path ${JSON.stringify(args.path)} is not absolute: give a full path such as ` +
          `"/var/lib/gci/catalog.db".`,
      );
    }
    this.path = args.path;
    this.busyTimeoutMs = args.busyTimeoutMs ?? 5000;
    this.onBadRecord = args.onBadRecord ?? reportBadRecordOnStderr;
    try {
      fs.mkdirSync(path.dirname(args.path), { recursive: true });
      this.db = new Database(args.path);
    } catch (e) {
      throw precondition(
        `cannot open the SQLite catalog "${args.path}": ${(e as Error).message}. ` +
          `Check that the directory is writable by this user.`,
      );
    }
    try {
      this.db.pragma(`busy_timeout = ${Math.floor(this.busyTimeoutMs)}`);
      // Switching a new file to WAL takes an exclusive lock and SQLite answers BUSY at once
      // (without the busy handler) while another process opens the same file: retry it.
      this.retryBusy(() => this.db.pragma("journal_mode = WAL"));
      // WAL + NORMAL survives process crashes; only an OS crash can lose the last commits.
      this.db.pragma("synchronous = NORMAL");
      this.retryBusy(() => this.migrate());
    } catch (e) {
      this.db.close();
      throw this.wrap("open the catalog", e);
    }
  }

  /** Runs `fn`, retrying while SQLite answers BUSY, for up to the busy timeout. */
  private retryBusy<T>(fn: () => T): T {
    const deadline = Date.now() + this.busyTimeoutMs;
    for (;;) {
      try {
        return fn();
      } catch (e) {
        const code = (e as { code?: unknown }).code;
        if (typeof code !== "string" || !code.startsWith("SQLITE_BUSY") || Date.now() > deadline) throw e;
        // A synchronous pause: the constructor cannot await.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 + Math.random() * 20);
      }
    }
  }

  private migrate(): void {
    this.db
      .transaction(() => {
        const version = this.db.pragma("user_version", { simple: true }) as number;
        if (version > SQLITE_SCHEMA_VERSION) {
          throw precondition(
            `SQLite catalog "${this.path}" has schema version ${version}, newer than this GCI understands ` +
              `(${SQLITE_SCHEMA_VERSION}): upgrade GCI, or point it at another catalog file.`,
          );
        }
        if (version < 1) this.db.exec(SCHEMA_V1);
        if (version < 2) this.db.exec(SCHEMA_V2);
        if (version < SQLITE_SCHEMA_VERSION) this.db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
      })
      .immediate();
  }

  /** A prepared statement, compiled once per connection. */
  private stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  /** The valid records of `rows`; each bad one is left out and reported. */
  private all<R, T>(rows: unknown[], read: (row: R) => T): T[] {
    return readAll(rows as R[], read, this.onBadRecord);
  }

  /** Runs one step synchronously, turning SQLite failures into GciErrors. */
  private run<T>(what: string, fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(this.wrap(what, e));
    }
  }

  private wrap(what: string, e: unknown): Error {
    if (GciError.isInstance(e)) return e;
    const err = e as Error & { code?: string };
    if (typeof err.code === "string" && err.code.startsWith("SQLITE_BUSY")) {
      return unavailable(
        `could not ${what}: the SQLite catalog "${this.path}" stayed locked by another process for ` +
          `${this.busyTimeoutMs} ms. Retry, or find the process holding a long write on it.`,
      );
    }
    if (!this.db.open) {
      return precondition(`could not ${what}: the SQLite catalog "${this.path}" is closed; open a new one.`);
    }
    return new GciError(
      "INTERNAL",
      `could not ${what} in the SQLite catalog "${this.path}": ${err.message ?? String(e)}.`,
    );
  }

  putRegion(name: string): Promise<void> {
    return this.run(`put region ${JSON.stringify(name)}`, () => {
      checkName("region name", name);
      this.stmt("INSERT OR IGNORE INTO regions (name) VALUES (?)").run(name);
    });
  }

  listRegions(): Promise<string[]> {
    return this.run("list regions", () =>
      (this.stmt("SELECT name FROM regions ORDER BY name").all() as { name: string }[]).map((r) => r.name),
    );
  }

  putDatacenter(dc: DatacenterRecord): Promise<void> {
    return this.run(`put datacenter ${JSON.stringify(dc?.name)}`, () => {
      const d = checkDatacenter(dc);
      this.db
        .transaction(() => {
          this.stmt("INSERT OR IGNORE INTO regions (name) VALUES (?)").run(d.region);
          this.stmt(
            `INSERT OR REPLACE INTO datacenters (name, region, endpoint, vcpus, memory_mib, heartbeat_at)
             VALUES (?, ?, ?, ?, ?, ?)`,
          ).run(d.name, d.region, d.endpoint, d.capacity.vcpus, d.capacity.memoryMiB, d.heartbeatAt);
        })
        .immediate();
    });
  }

  getDatacenter(name: string): Promise<DatacenterRecord | undefined> {
    return this.run(`get datacenter ${JSON.stringify(name)}`, () => {
      checkName("datacenter name", name);
      const row = this.stmt("SELECT * FROM datacenters WHERE name = ?").get(name) as
        DatacenterRow | undefined;
      return row && datacenterOut(row);
    });
  }

  listDatacenters(region?: string): Promise<DatacenterRecord[]> {
    return this.run("list datacenters", () => {
      const rows =
        region === undefined
          ? this.stmt("SELECT * FROM datacenters ORDER BY name").all()
          : this.stmt("SELECT * FROM datacenters WHERE region = ? ORDER BY name").all(
              checkName("region name", region),
            );
      return this.all(rows, datacenterOut);
    });
  }

  deleteDatacenter(name: string): Promise<void> {
    return this.run(`delete datacenter ${JSON.stringify(name)}`, () => {
      checkName("datacenter name", name);
      this.stmt("DELETE FROM datacenters WHERE name = ?").run(name);
    });
  }

  heartbeat(name: string, at: number): Promise<void> {
    return this.run(`record a heartbeat of datacenter ${JSON.stringify(name)}`, () => {
      checkName("datacenter name", name);
      checkCount(`heartbeat time of datacenter "${name}"`, at);
      const changed = this.stmt("UPDATE datacenters SET heartbeat_at = ? WHERE name = ?").run(at, name);
      if (changed.changes === 0) throw unknownDatacenter(name);
    });
  }

  putImage(image: ImageRecord): Promise<void> {
    return this.run(`put image ${JSON.stringify(image?.digest)}`, () => {
      const i = checkImage(image);
      this.db
        .prepare(
          `INSERT OR IGNORE INTO images (digest, name, size_bytes, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
        )
        .run(i.digest, i.name, i.sizeBytes, i.owner, i.createdAt);
    });
  }

  getImage(digest: string): Promise<ImageRecord | undefined> {
    return this.run(`get image ${JSON.stringify(digest)}`, () => {
      checkDigest(digest);
      const row = this.stmt("SELECT * FROM images WHERE digest = ?").get(digest) as ImageRow | undefined;
      return row && imageOut(row);
    });
  }

  listImages(): Promise<ImageRecord[]> {
    return this.run("list images", () =>
      this.all(this.stmt("SELECT * FROM images ORDER BY digest").all(), imageOut),
    );
  }

  deleteImage(digest: string): Promise<void> {
    return this.run(`delete image ${JSON.stringify(digest)}`, () => {
      checkDigest(digest);
      this.db
        .transaction(() => {
          this.stmt("DELETE FROM placements WHERE digest = ?").run(digest);
          this.stmt("DELETE FROM images WHERE digest = ?").run(digest);
        })
        .immediate();
    });
  }

  putPlacement(p: PlacementRecord): Promise<void> {
    return this.run(
      `put placement of ${JSON.stringify(p?.digest)} in ${JSON.stringify(p?.datacenter)}`,
      () => {
        const q = checkPlacement(p);
        this.db
          .prepare(
            `INSERT OR REPLACE INTO placements (digest, datacenter, state, bytes_done, bytes_total, error, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
          )
          .run(q.digest, q.datacenter, q.state, q.bytesDone, q.bytesTotal, q.error, q.updatedAt);
      },
    );
  }

  getPlacement(digest: string, datacenter: string): Promise<PlacementRecord | undefined> {
    return this.run(`get placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
      checkDigest(digest);
      checkName("placement datacenter", datacenter);
      const row = this.db
        .prepare("SELECT * FROM placements WHERE digest = ? AND datacenter = ?")
        .get(digest, datacenter) as PlacementRow | undefined;
      return row && placementOut(row);
    });
  }

  listPlacements(digest?: string): Promise<PlacementRecord[]> {
    return this.run("list placements", () => {
      const rows =
        digest === undefined
          ? this.stmt("SELECT * FROM placements ORDER BY digest, datacenter").all()
          : this.stmt("SELECT * FROM placements WHERE digest = ? ORDER BY datacenter").all(
              checkDigest(digest),
            );
      return this.all(rows, placementOut);
    });
  }

  deletePlacement(digest: string, datacenter: string): Promise<void> {
    return this.run(`delete placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
      checkDigest(digest);
      checkName("placement datacenter", datacenter);
      this.stmt("DELETE FROM placements WHERE digest = ? AND datacenter = ?").run(digest, datacenter);
    });
  }

  acquireLease(digest: string, datacenter: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.run(`acquire the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
      checkLeaseArgs(digest, datacenter, holder, ttlMs);
      // IMMEDIATE takes the write lock before the read, so no other process can read the same
      // "free" lease between our read and our write.
      return this.db
        .transaction((): boolean => {
          const now = Date.now();
          const row = this.stmt("SELECT * FROM leases WHERE digest = ? AND datacenter = ?").get(
            digest,
            datacenter,
          ) as LeaseRow | undefined;
          if (row && row.holder !== holder && leaseLive(toLease(row), now)) return false;
          this.stmt(
            "INSERT OR REPLACE INTO leases (digest, datacenter, holder, expires_at) VALUES (?, ?, ?, ?)",
          ).run(digest, datacenter, holder, now + ttlMs);
          return true;
        })
        .immediate();
    });
  }

  getLease(digest: string, datacenter: string): Promise<LeaseRecord | undefined> {
    return this.run(`get the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
      checkDigest(digest);
      checkName("lease datacenter", datacenter);
      const row = this.db
        .prepare("SELECT * FROM leases WHERE digest = ? AND datacenter = ?")
        .get(digest, datacenter) as LeaseRow | undefined;
      // An expired lease binds no one, so it reads as free.
      const lease = row && leaseOut(row);
      return lease && leaseLive(lease, Date.now()) ? lease : undefined;
    });
  }

  releaseLease(digest: string, datacenter: string, holder: string): Promise<void> {
    return this.run(`release the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
      checkLeaseArgs(digest, datacenter, holder);
      this.db
        .prepare("DELETE FROM leases WHERE digest = ? AND datacenter = ? AND holder = ?")
        .run(digest, datacenter, holder);
    });
  }

  putVmGroupIfAbsent(group: VmGroupRecord): Promise<VmGroupRecord> {
    return this.run(`put VM group ${JSON.stringify(group?.requestId)}`, () => {
      const g = checkVmGroup(group);
      return this.db
        .transaction((): VmGroupRecord => {
          const row = this.stmt("SELECT * FROM vm_groups WHERE request_id = ?").get(g.requestId) as
            VmGroupRow | undefined;
          if (row) return vmGroupOut(row);
          this.stmt(
            `INSERT INTO vm_groups (request_id, datacenter, digest, count, vcpus, memory_mib, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)`,
          ).run(g.requestId, g.datacenter, g.digest, g.count, g.vcpus, g.memoryMiB, g.createdAt);
          return g;
        })
        .immediate();
    });
  }

  createVmGroup(group: VmGroupRecord): Promise<CreatedVmGroup> {
    return this.run(`create VM group ${JSON.stringify(group?.requestId)}`, () => {
      const g = checkVmGroup(group);
      // IMMEDIATE: the write lock is held from the capacity read to the insert, so two
      // processes cannot both see the same free room.
      return this.db
        .transaction((): CreatedVmGroup => {
          const stored = this.vmGroupRow(g.requestId);
          if (stored) return { group: toVmGroup(stored), created: false };
          this.checkRoom(g);
          this.stmt(
            `INSERT INTO vm_groups (request_id, datacenter, digest, count, vcpus, memory_mib, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)`,
          ).run(g.requestId, g.datacenter, g.digest, g.count, g.vcpus, g.memoryMiB, g.createdAt);
          return { group: g, created: true };
        })
        .immediate();
    });
  }

  updateVmGroup(expected: VmGroupRecord, next: VmGroupRecord): Promise<boolean> {
    return this.run(`update VM group ${JSON.stringify(expected?.requestId)}`, () => {
      const e = checkVmGroup(expected);
      const n = checkVmGroup(next);
      checkGroupUpdate(e, n);
      return this.db
        .transaction((): boolean => {
          const stored = this.vmGroupRow(e.requestId);
          if (stored && sameVmGroup(toVmGroup(stored), n)) return true;
          if (!stored || !sameVmGroup(toVmGroup(stored), e)) return false;
          if (groupGrows(e, n)) this.checkRoom(n);
          this.stmt(
            `UPDATE vm_groups SET digest = ?, count = ?, vcpus = ?, memory_mib = ?, created_at = ?
               WHERE request_id = ?`,
          ).run(n.digest, n.count, n.vcpus, n.memoryMiB, n.createdAt, n.requestId);
          return true;
        })
        .immediate();
    });
  }

  private vmGroupRow(requestId: string): VmGroupRow | undefined {
    return this.stmt("SELECT * FROM vm_groups WHERE request_id = ?").get(requestId) as VmGroupRow | undefined;
  }

  /** Inside a write transaction: RESOURCE_EXHAUSTED unless `g` fits beside its datacenter's other groups. */
  private checkRoom(g: VmGroupRecord): void {
    const dc = this.stmt("SELECT * FROM datacenters WHERE name = ?").get(g.datacenter) as
      DatacenterRow | undefined;
    if (!dc) throw unknownDatacenter(g.datacenter);
    const groups = this.stmt("SELECT * FROM vm_groups WHERE datacenter = ?").all(
      g.datacenter,
    ) as VmGroupRow[];
    checkGroupFits(toDatacenter(dc), groups.map(toVmGroup), g);
  }

  getVmGroup(requestId: string): Promise<VmGroupRecord | undefined> {
    return this.run(`get VM group ${JSON.stringify(requestId)}`, () => {
      checkId("VM group request id", requestId);
      const row = this.stmt("SELECT * FROM vm_groups WHERE request_id = ?").get(requestId) as
        VmGroupRow | undefined;
      return row && vmGroupOut(row);
    });
  }

  listVmGroups(datacenter?: string): Promise<VmGroupRecord[]> {
    return this.run("list VM groups", () => {
      const rows =
        datacenter === undefined
          ? this.stmt("SELECT * FROM vm_groups ORDER BY request_id").all()
          : this.stmt("SELECT * FROM vm_groups WHERE datacenter = ? ORDER BY request_id").all(
              checkName("datacenter name", datacenter),
            );
      return this.all(rows, vmGroupOut);
    });
  }

  deleteVmGroup(requestId: string): Promise<void> {
    return this.run(`delete VM group ${JSON.stringify(requestId)}`, () => {
      checkId("VM group request id", requestId);
      this.stmt("DELETE FROM vm_groups WHERE request_id = ?").run(requestId);
    });
  }

  putImageRef(ref: ImageRefRecord): Promise<void> {
    return this.run(
      `claim image ${JSON.stringify(ref?.digest)} in ${JSON.stringify(ref?.datacenter)}`,
      () => {
        const r = checkImageRef(ref);
        this.stmt(
          "INSERT OR REPLACE INTO image_refs (digest, datacenter, holder, created_at) VALUES (?, ?, ?, ?)",
        ).run(r.digest, r.datacenter, r.holder, r.createdAt);
      },
    );
  }

  deleteImageRef(digest: string, datacenter: string, holder: string): Promise<void> {
    return this.run(`release the claim on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
      checkDigest(digest);
      checkName("claim datacenter", datacenter);
      checkHolder(holder);
      this.stmt("DELETE FROM image_refs WHERE digest = ? AND datacenter = ? AND holder = ?").run(
        digest,
        datacenter,
        holder,
      );
    });
  }

  listImageRefs(digest: string): Promise<ImageRefRecord[]> {
    return this.run(`list the claims on ${JSON.stringify(digest)}`, () => {
      checkDigest(digest);
      const rows = this.stmt("SELECT * FROM image_refs WHERE digest = ? ORDER BY datacenter, holder").all(
        digest,
      ) as ImageRefRow[];
      return rows.map((r) => ({
        digest: r.digest,
        datacenter: r.datacenter,
        holder: r.holder,
        createdAt: r.created_at,
      }));
    });
  }

  putVm(vm: VmRecord): Promise<void> {
    return this.run(`put VM ${JSON.stringify(vm?.id)}`, () => {
      const v = checkVm(vm);
      this.db
        .prepare(
          `INSERT OR REPLACE INTO vms (id, request_id, datacenter, digest, state, addresses, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(v.id, v.requestId, v.datacenter, v.digest, v.state, JSON.stringify(v.addresses), v.updatedAt);
    });
  }

  getVm(id: string): Promise<VmRecord | undefined> {
    return this.run(`get VM ${JSON.stringify(id)}`, () => {
      checkVmId("VM id", id);
      const row = this.stmt("SELECT * FROM vms WHERE id = ?").get(id) as VmRow | undefined;
      return row && vmOut(row);
    });
  }

  listVms(filter?: { datacenter?: string; requestId?: string }): Promise<VmRecord[]> {
    return this.run("list VMs", () => {
      const where: string[] = [];
      const params: string[] = [];
      if (filter?.datacenter !== undefined) {
        where.push("datacenter = ?");
        params.push(checkName("datacenter name", filter.datacenter));
      }
      if (filter?.requestId !== undefined) {
        where.push("request_id = ?");
        params.push(checkId("VM request id", filter.requestId));
      }
      const sql = `SELECT * FROM vms${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY id`;
      return this.all(this.stmt(sql).all(...params), vmOut);
    });
  }

  deleteVm(id: string): Promise<void> {
    return this.run(`delete VM ${JSON.stringify(id)}`, () => {
      checkVmId("VM id", id);
      this.stmt("DELETE FROM vms WHERE id = ?").run(id);
    });
  }

  close(): Promise<void> {
    if (this.db.open) this.db.close();
    return Promise.resolve();
  }
}
