/** The outputs of a VirtualMachineGroup, built from its inputs and the VMs that run. */
import type { Operation, Vm } from "../../common/client";
import type { WorldConnection } from "./connect";
import { findDatacenter } from "./topology";
import { VmGroupInputs, VmGroupOutputs, targetOf } from "./vmgroup-types";

/** What the outputs are made of. */
export interface OutputsArgs {
  readonly inputs: VmGroupInputs;
  readonly requestId: string;
  /** Where the VMs run. */
  readonly datacenter: string;
  readonly world: WorldConnection;
  readonly vms: Vm[];
  /** The start operation, whose transfer is reported. @default none: no transfer */
  readonly op?: Operation;
  /** In-place updates so far. @default 0 */
  readonly updates?: number;
  /** Whether the start was seen through. @default true */
  readonly complete?: boolean;
}

/** The outputs of the group `args.requestId`: the inputs, where it runs and its VMs' addresses. */
export function outputs(args: OutputsArgs): VmGroupOutputs {
  const { inputs, datacenter, world, vms } = args;
  const selected = (vm: Vm) =>
    (vm.addresses ?? [])
      .filter((a) => inputs.ports === undefined || inputs.ports.includes(a.guest_port))
      .sort((a, b) => a.guest_port - b.guest_port);
  const t = args.op?.start_vms?.transfer;
  return {
    // region and datacenter are overwritten below: where the VMs run.
    ...inputs,
    requestId: args.requestId,
    target: targetOf(inputs),
    datacenter,
    region: findDatacenter(world.topology, datacenter)?.region ?? inputs.region ?? "",
    vmIds: vms.map((v) => v.id),
    addresses: vms.flatMap((v) => selected(v).map((a) => a.address)),
    urls: vms.flatMap((v) =>
      selected(v)
        .slice(0, 1)
        .map((a) => `http://${a.address}`),
    ),
    transfer: t
      ? { source: t.source, destination: t.destination, bytes: Number(t.bytes), seconds: Number(t.seconds) }
      : null,
    updates: args.updates ?? 0,
    complete: args.complete ?? true,
  };
}
