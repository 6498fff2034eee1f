/** GCI's Pulumi SDK: the resources a program declares. */
export { Datacenter } from "./datacenter";
export type { DatacenterArgs } from "./datacenter";
