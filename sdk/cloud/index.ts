/** The cloud catalog and what the AWS and GCP components share: sizes, options, validation. */
export {
  cloudCatalogFromStackOutput,
  cloudCatalogProblems,
  cloudPlacement,
  parseCloudCatalog,
} from "./catalog";
export type {
  AwsCatalog,
  AwsRegionCatalog,
  CloudCatalog,
  CloudCatalogInput,
  CloudName,
  CloudPlacement,
  GcpCatalog,
  GcpRegionCatalog,
} from "./catalog";
export {
  AWS_INSTANCE_TYPES,
  DEFAULT_COPY_TIMEOUT,
  GCP_MACHINE_TYPES,
  MACHINE_SIZE_NAMES,
  MAX_CLOUD_COUNT,
  commonGroupProblems,
  durationSeconds,
} from "./group";
export type { CloudGroupArgs, CloudTransfer, MachineSizeName } from "./group";
export { CloudArgsError } from "./problems";
export type { Problem } from "./problems";
