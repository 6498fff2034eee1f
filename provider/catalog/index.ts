/** The global catalog: its records, its interface, and the two engines behind it. */

export type {
  Capacity,
  Catalog,
  CreatedVmGroup,
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
export { SqliteCatalog, SQLITE_SCHEMA_VERSION } from "./sqlite";
export type { SqliteCatalogArgs } from "./sqlite";
export { EtcdCatalog, ETCD_DEFAULT_PREFIX } from "./etcd";
export type { EtcdCatalogArgs } from "./etcd";
export { openCatalog } from "./open";
export type { OpenCatalogOptions } from "./open";
