/** GCI's Pulumi SDK: the resources a program declares. */
export { Catalog, localWorld } from "./catalog";
export type { CatalogInput, CatalogOutput, DatacenterEntry, LocalWorld } from "./catalog";
export { Datacenter } from "./datacenter";
export type { DatacenterArgs } from "./datacenter";
export { Image } from "./image";
export type { ImageArgs, ImageManifestArgs, PreparedImage } from "./image";
export { ImageReplica } from "./image-replica";
export type { ImageReplicaArgs } from "./image-replica";
export { VirtualMachineGroup } from "./virtual-machine-group";
export type { TransferInfo, VirtualMachineGroupArgs } from "./virtual-machine-group";
export * as aws from "./aws";
export * as gcp from "./gcp";
export {
  CloudArgsError,
  cloudCatalogFromStackOutput,
  cloudCatalogProblems,
  cloudPlacement,
  parseCloudCatalog,
} from "./cloud";
export type {
  CloudCatalog,
  CloudCatalogInput,
  CloudGroupArgs,
  CloudTransfer,
  MachineSizeName,
} from "./cloud";
