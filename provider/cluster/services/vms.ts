/**
 * The VM API of a cluster manager: StartVms and PlanStartVms (./start.ts), ScaleVms, StopVms,
 * ListVms, GetVm, RestartVm and GetVmLogs. A call about a VM or group another datacenter runs
 * is forwarded there (forwardTo).
 */

import type { ClusterManagerHandlers } from "../../../schema/gen/gci/v1/ClusterManager";
import type { Operation } from "../../../schema/gen/gci/v1/Operation";
import type { ScaleVmsRequest__Output } from "../../../schema/gen/gci/v1/ScaleVmsRequest";
import type { StopVmsRequest__Output } from "../../../schema/gen/gci/v1/StopVmsRequest";
import type { Vm__Output } from "../../../schema/gen/gci/v1/Vm";
import type { VmGroupRecord, VmRecord } from "../../catalog";
import { checkId, checkVmId } from "../../catalog/validate";
import { GciError, invalid, notFound, precondition, unavailable } from "../../common/errors";
import { unary } from "../../common/rpc/status";
import { MAX_COUNT } from "../../common/sizes";
import { failpoint } from "../failpoint";
import { type Incoming, forwardTo } from "../forwarding";
import { type ClusterContext, runOperation } from "./context";
import { Starts } from "./start";

type VmHandlers = Pick<
  ClusterManagerHandlers,
  "StartVms" | "PlanStartVms" | "ScaleVms" | "StopVms" | "ListVms" | "GetVm" | "RestartVm" | "GetVmLogs"
>;

/** The VM handlers of the cluster manager `ctx` describes; `starts` also resumes groups after a restart. */
export function vmHandlers(ctx: ClusterContext, starts: Starts): VmHandlers {
  const vms = new Vms(ctx);
  return {
    StartVms: unary(async (req, call) => starts.start(req, call)),
    PlanStartVms: unary(async (req) => starts.plan(req)),
    ScaleVms: unary(async (req, call) => vms.scale(req, call)),
    StopVms: unary(async (req, call) => vms.stop(req, call)),
    ListVms: unary(async (req) => ({ vms: await vms.list(req.request_id) })),
    GetVm: unary(async (req) => vms.vm(req.id)),
    RestartVm: unary(async (req, call) => {
      const requestId = checkId("request_id", req.request_id);
      const vm = await vms.vm(req.vm_id);
      if (vm.datacenter !== ctx.name) {
        return forwardTo(ctx, call, `RestartVm of ${vm.id}`, vm.datacenter, (c) =>
          c.restartVm(requestId, vm.id),
        );
      }
      return runOperation(ctx, `restart-${requestId}`, "restart_vm", async () => {
        await ctx.instances.restart(vm.id);
        return {};
      });
    }),
    GetVmLogs: unary(async (req, call) => {
      const vm = await vms.vm(req.vm_id);
      if (vm.datacenter === ctx.name)
        return { vm_id: vm.id, text: ctx.instances.logs(vm.id, req.tail_bytes || 65536) };
      return forwardTo(ctx, call, `GetVmLogs of ${vm.id}`, vm.datacenter, async (c) => ({
        vm_id: vm.id,
        text: await c.getVmLogs(vm.id, req.tail_bytes),
      }));
    }),
  };
}

class Vms {
  constructor(private readonly ctx: ClusterContext) {}

  /** A start request's group, or NOT_FOUND. */
  private async group(startRequestId: string): Promise<VmGroupRecord> {
    checkId("start_request_id", startRequestId);
    const group = await this.ctx.catalog.getVmGroup(startRequestId);
    if (!group) throw notFound(`start request "${startRequestId}" has no VMs: list them with \`gci vm ls\``);
    return group;
  }

  async scale(req: ScaleVmsRequest__Output, call: Incoming): Promise<Operation> {
    const { ctx } = this;
    const requestId = checkId("request_id", req.request_id);
    if (!Number.isInteger(req.count) || req.count < 1 || req.count > MAX_COUNT) {
      throw invalid(
        `count ${req.count} is out of range: scale to 1 to ${MAX_COUNT} VMs (stop the group to remove it)`,
      );
    }
    const group = await this.group(req.start_request_id);
    if (group.datacenter !== ctx.name) {
      const what = `ScaleVms of start request ${req.start_request_id}`;
      return forwardTo(ctx, call, what, group.datacenter, (c) =>
        c.scaleVms(requestId, req.start_request_id, req.count),
      );
    }
    const scaled = { ...group, count: req.count };
    // One compare-and-swap, with the capacity check of a growth: the group is never absent
    // from the catalog, and two scales cannot both take the last free room.
    if (!(await ctx.catalog.updateVmGroup(group, scaled))) {
      throw precondition(
        `start request ${group.requestId} changed while this ScaleVms read it (another scale or a stop ` +
          `ran meanwhile): retry with a new request id`,
      );
    }
    failpoint("scale.record");
    ctx.log.info("scale.accepted", {
      requestId,
      startRequestId: group.requestId,
      from: group.count,
      to: req.count,
    });
    return runOperation(ctx, `scale-${requestId}`, "scale_vms", async () => ({
      start_vms: {
        datacenter: ctx.name,
        region: ctx.region,
        vm_ids: await ctx.instances.converge(scaled),
        transfer: null,
      },
    }));
  }

  async stop(req: StopVmsRequest__Output, call: Incoming): Promise<Operation> {
    const { ctx } = this;
    const requestId = checkId("request_id", req.request_id);
    const group = await this.group(req.start_request_id);
    if (group.datacenter !== ctx.name) {
      const what = `StopVms of start request ${req.start_request_id}`;
      try {
        return await forwardTo(ctx, call, what, group.datacenter, (c) =>
          c.stopVms(requestId, req.start_request_id, req.vm_ids),
        );
      } catch (e) {
        if (!GciError.isInstance(e) || e.code !== "UNAVAILABLE") throw e;
        return this.forgetUnmanaged(requestId, group, req.vm_ids, e);
      }
    }
    return runOperation(ctx, `stop-${requestId}`, "stop_vms", async () => {
      const n = await ctx.instances.stop(group.requestId, req.vm_ids);
      ctx.log.info("stop.done", { requestId, startRequestId: group.requestId, stopped: n });
      return {};
    });
  }

  /**
   * StopVms of a whole group whose cluster manager does not answer (`down`): when none of its
   * VMs has a process (none booting, running or stopping; e.g. a group its cluster manager
   * accepted and died before starting anything), nothing runs to be stopped, so its records
   * are forgotten from here and its capacity is free. Otherwise UNAVAILABLE: only the owner
   * can stop its processes.
   */
  private async forgetUnmanaged(
    requestId: string,
    group: VmGroupRecord,
    vmIds: readonly string[],
    down: GciError,
  ): Promise<Operation> {
    const { catalog, log } = this.ctx;
    const owner = group.datacenter;
    const restart = `start it again (gci world up), then stop again`;
    if (vmIds.length > 0) {
      throw unavailable(
        `the cluster manager of ${owner}, where start request ${group.requestId} runs, does not answer ` +
          `(${down.message}): ${restart}`,
      );
    }
    const vms = await catalog.listVms({ requestId: group.requestId });
    const live = vms.filter((v) => v.state === "booting" || v.state === "running" || v.state === "stopping");
    if (live.length > 0) {
      throw unavailable(
        `the cluster manager of ${owner} does not answer (${down.message}) and VMs ` +
          `${live.map((v) => `${v.id} (${v.state})`).join(", ")} of start request ${group.requestId} ` +
          `run there: ${restart}`,
      );
    }
    return runOperation(this.ctx, `stop-${requestId}`, "stop_vms", async () => {
      for (const vm of vms) await catalog.deleteVm(vm.id);
      await catalog.deleteVmGroup(group.requestId);
      const forgotten = vms.map((v) => `${v.id} (${v.state})`);
      log.warn("stop.forgotten", {
        requestId,
        startRequestId: group.requestId,
        owner,
        vms: forgotten,
        reason: down.message,
      });
      return {};
    });
  }

  /** ListVms: one start request's VMs wherever they run (the catalog is global), or this datacenter's. */
  async list(requestId: string): Promise<Vm__Output[]> {
    const records = await this.ctx.catalog.listVms(requestId ? { requestId } : { datacenter: this.ctx.name });
    // One catalog read per group, not two per VM.
    const groups = new Map(
      await Promise.all(
        [...new Set(records.map((v) => v.requestId))].map(
          async (id) => [id, await this.groupForListing(id)] as const,
        ),
      ),
    );
    return records.map((v) => vmOutput(v, groups.get(v.requestId)));
  }

  /** A VM's group for a listing: a bad group record (DATA_LOSS) is logged and listed without sizes. */
  private async groupForListing(requestId: string): Promise<VmGroupRecord | undefined> {
    try {
      return await this.ctx.catalog.getVmGroup(requestId);
    } catch (e) {
      if (!GciError.isInstance(e) || e.code !== "DATA_LOSS") throw e;
      this.ctx.log.warn("catalog.bad_record", { error: e.message });
      return undefined;
    }
  }

  /** The datacenter's VM record for an id, or NOT_FOUND. */
  async vm(id: string): Promise<Vm__Output> {
    checkVmId("VM id", id);
    const record = await this.ctx.catalog.getVm(id);
    if (!record) throw notFound(`VM "${id}" is not known: list them with \`gci vm ls\``);
    return vmOutput(record, await this.ctx.catalog.getVmGroup(record.requestId));
  }
}

/** A VM as the API shows it: its record, with the size of its group. */
function vmOutput(record: VmRecord, group: VmGroupRecord | undefined): Vm__Output {
  return {
    id: record.id,
    request_id: record.requestId,
    datacenter: record.datacenter,
    image_digest: record.digest,
    state: record.state,
    addresses: Object.entries(record.addresses).map(([port, address]) => ({
      guest_port: Number(port),
      address,
    })),
    kind: record.id.startsWith("proc-") ? "process" : "vm",
    vcpus: group?.vcpus ?? 0,
    memory_mib: group?.memoryMiB ?? 0,
  };
}
