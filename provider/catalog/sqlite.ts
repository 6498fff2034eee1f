/**
 * The embedded catalog engine: one SQLite file shared by every cluster manager of a world on
 * one machine. WAL lets readers run beside the one writer; busy_timeout makes a writer wait for
 * another process instead of failing; read-then-write steps run in BEGIN IMMEDIATE transactions
 * so two processes cannot both decide they won.
 *
 * This file is the engine's face; its parts live beside it: sqlite-store.ts (the connection and
 * its transaction helpers), sqlite-schema.ts (tables and migration), sqlite-rows.ts (rows to
 * records), and one module per kind of record (sqlite-topology, -images, -leases, -groups).
 */

import * as path from "path";

import { invalid } from "../common/errors";
import * as groups from "./sqlite-groups";
import * as images from "./sqlite-images";
import * as leases from "./sqlite-leases";
import { SqliteStore } from "./sqlite-store";
import * as topology from "./sqlite-topology";
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

export { SQLITE_SCHEMA_VERSION } from "./sqlite-schema";

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

/** The catalog in one SQLite file, safe to share between processes on one machine. */
export class SqliteCatalog implements Catalog {
  readonly path: string;
  private readonly store: SqliteStore;

  constructor(args: SqliteCatalogArgs) {
    if (typeof args.path !== "string" || !path.isAbsolute(args.path)) {
      throw invalid(
        `SQLite catalog path ${JSON.stringify(args.path)} is not absolute: give a full path such as ` +
          `"/var/lib/gci/catalog.db".`,
      );
    }
    this.path = args.path;
    this.store = new SqliteStore(
      args.path,
      args.busyTimeoutMs ?? 5000,
      args.onBadRecord ?? reportBadRecordOnStderr,
    );
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
