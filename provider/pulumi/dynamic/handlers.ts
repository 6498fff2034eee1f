import type * as pulumi from "@pulumi/pulumi";
import { datacenterHandlers } from "./datacenter";
import { imageHandlers } from "./image";
import { replicaHandlers } from "./replica";
import { vmGroupHandlers } from "./vmgroup";

/**
 * Every resource kind's handlers, by the type name in its token
 * (pulumi-nodejs:dynamic/gci:<Name>). The dynamic-provider process requires this file by
 * path at run time (see sdk/provider.ts), so the state holds only a small closure.
 */
export const handlers: Readonly<Record<string, pulumi.dynamic.ResourceProvider>> = {
  Datacenter: datacenterHandlers,
  Image: imageHandlers,
  VirtualMachineGroup: vmGroupHandlers,
  ImageReplica: replicaHandlers,
};
