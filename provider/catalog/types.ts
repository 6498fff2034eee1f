/**
 * The global catalog: one logical database for a whole world. It records the topology
 * (regions, datacenters), which images exist, where each is stored (placements), the VM
 * groups and VMs, and the leases that make exactly one transfer of an image into a
 * datacenter run at a time. Two engines implement it: SQLite (one file on one machine)
 * and etcd (a cluster, for worlds that span machines). Both pass test/integration/catalog.
 */

/** A datacenter as the catalog knows it. */
export interface DatacenterRecord {
  readonly name: string;
  readonly region: string;
  /** host:port of its cluster manager's gRPC endpoint. */
  readonly endpoint: string;
  readonly capacity: Capacity;
  /** Milliseconds since the epoch of the cluster manager's last heartbeat; 0 = never. */
  readonly heartbeatAt: number;
}

/** What a datacenter can hold at once. */
export interface Capacity {
  readonly vcpus: number;
  readonly memoryMiB: number;
}

/** An image, named by the sha256 digest of its whole archive ("sha256:<hex>"). */
export interface ImageRecord {
  readonly digest: string;
  readonly name: string;
  readonly sizeBytes: number;
  readonly owner: string;
  readonly createdAt: number;
}

export type PlacementState = "present" | "transferring" | "failed";

/** Whether (and how far) an image is stored in a datacenter. */
export interface PlacementRecord {
  readonly digest: string;
  readonly datacenter: string;
  readonly state: PlacementState;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  /** Why a placement failed; empty otherwise. */
  readonly error: string;
  readonly updatedAt: number;
}

export type VmState = "provisioning" | "booting" | "running" | "stopping" | "stopped" | "failed";

/** A request to run N instances of an image in one datacenter, keyed by its request id. */
export interface VmGroupRecord {
  readonly requestId: string;
  readonly datacenter: string;
  readonly digest: string;
  readonly count: number;
  readonly vcpus: number;
  readonly memoryMiB: number;
  readonly createdAt: number;
}

export interface VmRecord {
  readonly id: string;
  readonly requestId: string;
  readonly datacenter: string;
  readonly digest: string;
  readonly state: VmState;
  /** Forwarded ports, guest port -> "127.0.0.1:<host port>". */
  readonly addresses: Readonly<Record<string, string>>;
  readonly updatedAt: number;
}

/**
 * A claim that something outside the cluster managers needs an image's copy in a datacenter:
 * an Image (its home copy) or ImageReplica resource of some stack. A copy with claims is not
 * deleted; each resource removes only its own claim.
 */
export interface ImageRefRecord {
  readonly digest: string;
  readonly datacenter: string;
  /** Who claims it, e.g. the resource's request key (its URN). */
  readonly holder: string;
  readonly createdAt: number;
}

/** What {@link Catalog.createVmGroup} did. */
export interface CreatedVmGroup {
  /** The stored group: the new one, or the one an earlier request with this id stored. */
  readonly group: VmGroupRecord;
  /** True when this call stored it. */
  readonly created: boolean;
}

/** A transfer lease: who is moving an image into a datacenter, until when. */
export interface LeaseRecord {
  readonly digest: string;
  readonly datacenter: string;
  readonly holder: string;
  readonly expiresAt: number;
}

/** The catalog's interface. Every method is safe to call from many processes at once. */
export interface Catalog {
  /** Adds or replaces a region (idempotent). */
  putRegion(name: string): Promise<void>;
  listRegions(): Promise<string[]>;

  /** Adds or replaces a datacenter; its region is created if missing. */
  putDatacenter(dc: DatacenterRecord): Promise<void>;
  getDatacenter(name: string): Promise<DatacenterRecord | undefined>;
  listDatacenters(region?: string): Promise<DatacenterRecord[]>;
  deleteDatacenter(name: string): Promise<void>;
  heartbeat(name: string, at: number): Promise<void>;

  /** Records an image; a second put of the same digest is a no-op (first name wins). */
  putImage(image: ImageRecord): Promise<void>;
  getImage(digest: string): Promise<ImageRecord | undefined>;
  listImages(): Promise<ImageRecord[]>;
  /** Removes the image record and all its placements. */
  deleteImage(digest: string): Promise<void>;

  putPlacement(p: PlacementRecord): Promise<void>;
  getPlacement(digest: string, datacenter: string): Promise<PlacementRecord | undefined>;
  /** Placements of one image (every datacenter), or of every image when digest is omitted. */
  listPlacements(digest?: string): Promise<PlacementRecord[]>;
  deletePlacement(digest: string, datacenter: string): Promise<void>;

  /**
   * Takes the transfer lease for (digest, datacenter) if it is free or expired, or renews it
   * if `holder` already has it. Returns true when `holder` holds the lease afterwards.
   */
  acquireLease(digest: string, datacenter: string, holder: string, ttlMs: number): Promise<boolean>;
  getLease(digest: string, datacenter: string): Promise<LeaseRecord | undefined>;
  /** Releases the lease if `holder` has it; otherwise does nothing. */
  releaseLease(digest: string, datacenter: string, holder: string): Promise<void>;

  /**
   * Records a VM group unless one with the same request id exists; returns the stored one
   * (so a repeated request sees the original).
   */
  putVmGroupIfAbsent(group: VmGroupRecord): Promise<VmGroupRecord>;
  /**
   * Records a new VM group only if its datacenter has room for it beside the datacenter's other
   * groups, the check and the insert in one transaction, so concurrent starts cannot overcommit.
   * A group already stored under the request id is returned as it is (created: false, no check).
   * Throws RESOURCE_EXHAUSTED saying what is free, NOT_FOUND for an unknown datacenter.
   */
  createVmGroup(group: VmGroupRecord): Promise<CreatedVmGroup>;
  /**
   * Compare-and-swap: replaces the stored group with `next` (same request id and datacenter)
   * only if it still equals `expected`, field by field; returns false and writes nothing when
   * it changed or is gone (true, writing nothing, when it already equals `next`: a retried
   * update). A `next` that holds more than `expected` is checked against the datacenter's
   * capacity in the same transaction (RESOURCE_EXHAUSTED).
   */
  updateVmGroup(expected: VmGroupRecord, next: VmGroupRecord): Promise<boolean>;
  getVmGroup(requestId: string): Promise<VmGroupRecord | undefined>;
  listVmGroups(datacenter?: string): Promise<VmGroupRecord[]>;
  deleteVmGroup(requestId: string): Promise<void>;

  /** Adds (or renews) a holder's claim on an image's copy in a datacenter (idempotent). */
  putImageRef(ref: ImageRefRecord): Promise<void>;
  /** Removes one holder's claim; others' claims stay. Idempotent. */
  deleteImageRef(digest: string, datacenter: string, holder: string): Promise<void>;
  /** The claims on an image's copies (every datacenter), sorted by datacenter then holder. */
  listImageRefs(digest: string): Promise<ImageRefRecord[]>;

  putVm(vm: VmRecord): Promise<void>;
  getVm(id: string): Promise<VmRecord | undefined>;
  listVms(filter?: { datacenter?: string; requestId?: string }): Promise<VmRecord[]>;
  deleteVm(id: string): Promise<void>;

  close(): Promise<void>;
}
