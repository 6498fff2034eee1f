export { handlers } from "./handlers";
export { UNKNOWN, isUnknown, Failures } from "./inputs";
export type { DatacenterInputs } from "./datacenter";
