/**
 * Starting VM groups: StartVms (forwarded to the datacenter it names or picks, else accepted
 * here: the image brought in, the group booted, or rolled back), PlanStartVms, and the take-up
 * of every recorded group after a restart.
 */

import type { Operation } from "../../../schema/gen/gci/v1/Operation";
import type { StartPlan } from "../../../schema/gen/gci/v1/StartPlan";
import type { StartVmsRequest__Output } from "../../../schema/gen/gci/v1/StartVmsRequest";
import type { TransferSummary } from "../../../schema/gen/gci/v1/TransferSummary";
import type { DatacenterRecord, VmGroupRecord } from "../../catalog";
import { checkDigest, checkId } from "../../catalog/validate";
import { invalid, notFound, precondition, unavailable } from "../../common/errors";
import { MACHINE_SIZES, MAX_COUNT, MachineSize, machineSize } from "../../common/sizes";
import { failpoint } from "../failpoint";
import { type Incoming, forwardTo } from "../forwarding";
import { pickDatacenter } from "../placement";
import type { ClusterContext } from "./context";

/** A StartVms request's own fields, checked. */
interface CheckedStart {
  readonly requestId: string;
  readonly digest: string;
  readonly size: MachineSize;
}

export class Starts {
  constructor(private readonly ctx: ClusterContext) {}

  /** Checks a StartVms request's own fields, before anything is looked up. */
  private async check(req: StartVmsRequest__Output): Promise<CheckedStart> {
    const requestId = checkId("request_id", req.request_id);
    const digest = checkDigest(req.image_digest);
    if (!Number.isInteger(req.count) || req.count < 1 || req.count > MAX_COUNT) {
      throw invalid(`count ${req.count} is out of range: ask for 1 to ${MAX_COUNT} VMs`);
    }
    const size = sizeOf(req);
    if (!(await this.ctx.catalog.getImage(digest))) {
      throw notFound(`image ${digest} is not in the catalog: push it first with \`gci image push\``);
    }
    return { requestId, digest, size };
  }

  /** StartVms: forward to the right datacenter, or accept here, bring the image in, and boot. */
  async start(req: StartVmsRequest__Output, call: Incoming): Promise<Operation> {
    const checked = await this.check(req);
    const target = await pickDatacenter(this.ctx.catalog, req);
    if (target.name !== this.ctx.name) return this.forward(req, target, call);
    const opId = `start-${checked.requestId}`;
    const { op, created } = this.ctx.ops.begin(opId, "start_vms");
    if (!created) return op;
    try {
      await this.accept(opId, req, checked);
    } catch (e) {
      this.ctx.ops.fail(opId, e);
      // A refused request leaves no operation behind, so a corrected retry with the same id is accepted.
      this.ctx.ops.forget(opId);
      throw e;
    }
    return this.ctx.ops.get(opId);
  }

  /** Records the group here (or finds it, for a repeated request) and runs its start in the background. */
  private async accept(opId: string, req: StartVmsRequest__Output, checked: CheckedStart): Promise<void> {
    const { ctx } = this;
    const { requestId, digest, size } = checked;
    if (ctx.deleting.has(digest)) {
      throw unavailable(`image ${digest} is being deleted from ${ctx.name}: retry in a moment`);
    }
    // The capacity check and the insert are one catalog transaction: concurrent starts
    // cannot both take the last free room.
    const { group, created } = await ctx.catalog.createVmGroup({
      requestId,
      datacenter: ctx.name,
      digest,
      count: req.count,
      vcpus: size.vcpus,
      memoryMiB: size.memoryMiB,
      createdAt: Date.now(),
    });
    if (group.digest !== digest) {
      throw invalid(
        `request id "${requestId}" was already used for image ${group.digest}: use a new request id`,
      );
    }
    ctx.log.info("start.accepted", {
      requestId,
      digest,
      count: group.count,
      vcpus: group.vcpus,
      memoryMiB: group.memoryMiB,
      forwardedBy: req.forwarded_by || undefined,
      repeated: !created,
    });
    failpoint("start.accepted");
    void this.run(opId, group, created);
  }

  /** StartVms to the datacenter that runs it; a request forwarded once already is refused. */
  private forward(
    req: StartVmsRequest__Output,
    target: DatacenterRecord,
    call: Incoming,
  ): Promise<Operation> {
    const { ctx } = this;
    return forwardTo(
      ctx,
      call,
      `StartVms ${req.request_id}`,
      target,
      (c) => c.startVms({ ...req, datacenter: target.name, forwarded_by: ctx.name }),
      () => {
        if (req.forwarded_by) {
          throw precondition(
            `request ${req.request_id} was forwarded by ${req.forwarded_by} to ${ctx.name}, which is not ${target.name}: the catalog changed; retry`,
          );
        }
        ctx.log.info("start.forwarded", {
          requestId: req.request_id,
          to: target.name,
          endpoint: target.endpoint,
        });
      },
    );
  }

  /**
   * After a restart: takes up every VM group recorded for this datacenter, in the background,
   * exactly as a repeated StartVms with its request id would (operation `start-<request id>`,
   * which a client repeating the request follows): the image brought in, the group converged to
   * its count, or the group rolled back when its image can no longer be had. A group a crash
   * left half-started is finished; a running one is left running.
   */
  resumeGroups(): void {
    this.ctx.catalog.listVmGroups(this.ctx.name).then(
      (groups) => {
        for (const group of groups) this.resumeGroup(group);
      },
      (e) => this.ctx.log.warn("start.resume_failed", { error: String(e) }),
    );
  }

  private resumeGroup(group: VmGroupRecord): void {
    const opId = `start-${group.requestId}`;
    // A client that repeated the request first has its operation running the same path.
    if (!this.ctx.ops.begin(opId, "start_vms").created) return;
    this.ctx.log.info("start.resumed", {
      requestId: group.requestId,
      digest: group.digest,
      count: group.count,
    });
    void this.run(opId, group, false);
  }

  /**
   * Why the group's image cannot be had here, if it cannot: its record is gone from the catalog,
   * or no datacenter (this one included) holds a copy to bring in. A group of it can never run.
   * A group with running instances whose bytes are here is not taken down for a lost record.
   */
  private async imageUnobtainable(group: VmGroupRecord): Promise<string | undefined> {
    const { catalog, store } = this.ctx;
    const { digest, requestId } = group;
    const here = await store.has(digest);
    if (!(await catalog.getImage(digest))) {
      const vms = await catalog.listVms({ requestId });
      if (here && vms.some((v) => v.state === "running")) return undefined;
      return `image ${digest} is no longer in the catalog`;
    }
    if (here) return undefined;
    const present = (await catalog.listPlacements(digest)).filter((p) => p.state === "present");
    if (present.length === 0) return `no datacenter holds a copy of image ${digest}`;
    return undefined;
  }

  /** Brings the image in and boots the group; `created`: this request stored the group. */
  private async run(opId: string, group: VmGroupRecord, created: boolean): Promise<void> {
    const { ctx } = this;
    const { requestId, digest } = group;
    try {
      ctx.ops.progress(opId, { phase: "image" });
      const gone = await this.imageUnobtainable(group);
      if (gone !== undefined) {
        await this.rollBack(group, gone);
        throw notFound(
          `${gone}: start request ${requestId} was rolled back; push the image, then start with a new request id`,
        );
      }
      const transfer = await this.ensureImage(opId, group);
      ctx.ops.progress(opId, { phase: "boot", chunks_done: 0, chunks_total: group.count });
      const vmIds = await ctx.instances.converge(group, (ready, total) =>
        ctx.ops.progress(opId, { phase: "boot", chunks_done: ready, chunks_total: total }),
      );
      ctx.log.info("start.done", { requestId, digest, vms: vmIds.length });
      ctx.ops.finish(opId, {
        start_vms: { datacenter: ctx.name, region: ctx.region, vm_ids: vmIds, transfer: transfer ?? null },
        progress: { phase: "done", chunks_done: vmIds.length, chunks_total: vmIds.length },
      });
    } catch (e) {
      ctx.log.warn("start.failed", { requestId, digest, error: String(e) });
      // Not when it was rolled back already (its image went); a catalog that cannot say: try.
      if ((await ctx.catalog.getVmGroup(requestId).catch(() => group)) !== undefined) {
        await this.rollBackStart(group, created);
      }
      ctx.ops.fail(opId, e);
      // A failed transfer leaves chunks, a failed first boot an extracted image.
      void ctx.collector.collect("start.failed");
    }
  }

  /**
   * The group's image, present here (see ImagePuller.ensure). When the transfer fails because
   * the image went meanwhile (removed from the catalog, or from every datacenter holding it),
   * the group is rolled back: it can never run.
   */
  private async ensureImage(opId: string, group: VmGroupRecord): Promise<TransferSummary | undefined> {
    const { requestId, digest } = group;
    try {
      return await this.ctx.puller.ensure(digest, requestId, (p) =>
        this.ctx.ops.progress(opId, {
          phase: "transfer",
          bytes_done: p.bytesDone,
          bytes_total: p.bytesTotal,
          chunks_done: p.chunksDone,
          chunks_total: p.chunksTotal,
          rate: p.rate,
        }),
      );
    } catch (e) {
      // A catalog that cannot answer now rolls nothing back: the transfer's own error is thrown.
      const gone = await this.imageUnobtainable(group).catch(() => undefined);
      if (gone !== undefined) await this.rollBack(group, `${gone} (${String(e)})`);
      throw e;
    }
  }

  /** Stops the group's instances and forgets the group (its capacity is free again), logging why. */
  private async rollBack(group: VmGroupRecord, reason: string): Promise<void> {
    const { requestId, digest } = group;
    try {
      const stopped = await this.ctx.instances.stop(requestId);
      this.ctx.log.warn("start.rolled_back", { requestId, digest, reason, stopped });
    } catch (e) {
      this.ctx.log.warn("start.rollback_failed", { requestId, digest, reason, error: String(e) });
    }
  }

  /**
   * After a failed start: only a group this request created and none of whose instances ever
   * ran is rolled back (stopped and forgotten, nothing left behind). A group that was running
   * keeps its record and its running instances; the failed ones stay "failed", and a repeated
   * start starts them again.
   */
  private async rollBackStart(group: VmGroupRecord, created: boolean): Promise<void> {
    const { requestId } = group;
    const vms = await this.ctx.catalog.listVms({ requestId });
    const running = vms.filter((v) => v.state === "running").length;
    if (!created || running > 0) {
      this.ctx.log.info("start.kept", { requestId, created, running, failed: vms.length - running });
      return;
    }
    await this.rollBack(group, "its first start failed and none of its instances ever ran");
  }

  /** PlanStartVms: where a start would run and what it would transfer; changes nothing. */
  async plan(req: StartVmsRequest__Output): Promise<StartPlan> {
    const { catalog } = this.ctx;
    const { digest, size } = await this.check(req);
    const target = await pickDatacenter(catalog, req);
    const image = await catalog.getImage(digest);
    const placements = await catalog.listPlacements(digest);
    const here = placements.some((p) => p.datacenter === target.name && p.state === "present");
    const regionOf = new Map((await catalog.listDatacenters()).map((d) => [d.name, d.region]));
    const sources = placements
      .filter((p) => p.state === "present" && p.datacenter !== target.name)
      .sort(
        (a, b) =>
          Number(regionOf.get(b.datacenter) === target.region) -
          Number(regionOf.get(a.datacenter) === target.region),
      );
    return {
      datacenter: target.name,
      region: target.region,
      needs_transfer: !here,
      source: here ? "" : (sources[0]?.datacenter ?? ""),
      bytes: here ? 0 : (image?.sizeBytes ?? 0),
      vcpus: size.vcpus,
      memory_mib: size.memoryMiB,
    };
  }
}

/** Resolves a request's machine size: a named size, or vCPUs and memory (defaults: micro). */
function sizeOf(req: StartVmsRequest__Output): MachineSize {
  if (req.machine_size) return machineSize(req.machine_size);
  return {
    vcpus: req.vcpus || MACHINE_SIZES.micro.vcpus,
    memoryMiB: req.memory_mib || MACHINE_SIZES.micro.memoryMiB,
  };
}
