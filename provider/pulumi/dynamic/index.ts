export { handlers } from "./handlers";
export { UNKNOWN, isUnknown, Failures } from "./inputs";
export { CATALOG_OUTPUT_SCHEMA, catalogOutputProblems, checkCatalogOutput } from "./topology";
export { previewReport } from "./report";
export type { DatacenterInputs } from "./datacenter";
export type { CatalogOutput, DatacenterEntry } from "./topology";
export type { ImageHint, PlannedTransfer } from "./plan";
export type { PreviewReport } from "./report";
