/**
 * The VirtualMachineGroup's contract: its inputs and outputs as the engine stores them, the
 * limits check applies, and the small helpers on targets every vmgroup module shares.
 */
import type { CatalogOutput } from "./topology";
import type { ImageHint, PlannedTransfer } from "./plan";

/** The most VMs one group may ask for: the cluster manager's limit, in one home. */
export { MAX_COUNT } from "../../common/sizes";
/** The timeout of a group read without one (an import, or a program naming a group by id). */
export const DEFAULT_TIMEOUT_S = 600;

/** The inputs of a VirtualMachineGroup as the engine stores them (after check). */
export interface VmGroupInputs {
  readonly catalog: CatalogOutput;
  /** The image digest. */
  readonly image: string;
  readonly imageHint?: ImageHint | null;
  readonly region?: string;
  readonly datacenter?: string;
  readonly count: number;
  readonly machineSize: string;
  /** Guest ports whose addresses are reported; undefined = every port the image declares. */
  readonly ports?: readonly number[];
  readonly timeoutSeconds: number;
  /** The start request id of a group started outside Pulumi, to take over instead of starting one. */
  readonly adopt?: string;
  /** project/stack/type/parent/name, from the SDK: the base of the idempotency key. */
  readonly requestKey: string;
  /** Replacement generation, counted by check. */
  readonly generation: number;
  /** Set by check: the transfer a create would cause, for preview and CI. */
  readonly plannedTransfer?: PlannedTransfer | null;
}

/** What happened to the image on the way to the VMs. */
export interface TransferOutput {
  readonly source: string;
  readonly destination: string;
  readonly bytes: number;
  readonly seconds: number;
}

/** The outputs: the inputs, where the group runs, and its VMs. */
export interface VmGroupOutputs extends Omit<VmGroupInputs, "datacenter" | "region"> {
  readonly requestId: string;
  /** Where the program asked for the VMs (the inputs region/datacenter). */
  readonly target: { readonly region?: string; readonly datacenter?: string };
  /** Where they run. */
  readonly datacenter: string;
  readonly region: string;
  readonly vmIds: string[];
  /** host:port of every reported port of every VM, in VM order. */
  readonly addresses: string[];
  /** http://host:port of each VM's first reported port. */
  readonly urls: string[];
  readonly transfer: TransferOutput | null;
  /** In-place updates so far (part of the scale request ids). */
  readonly updates: number;
  /** False while the group's start has not been seen through (a half-succeeded create). */
  readonly complete: boolean;
}

/** Where a group was asked to run: a region, a datacenter, or (checked) both. */
export type Target = { readonly region?: string; readonly datacenter?: string };

/** The resource's name: the last part of its request key, for progress lines. */
export const label = (key: string): string => key.split("/").pop() || key;

/** Deep equality of two JSON values, undefined and null alike. */
export const same = (a: unknown, b: unknown): boolean =>
  JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

/** The target of `t` alone (its other fields left out), as the outputs record it. */
export const targetOf = (t: Target): Target => ({
  ...(t.region !== undefined ? { region: t.region } : {}),
  ...(t.datacenter !== undefined ? { datacenter: t.datacenter } : {}),
});
