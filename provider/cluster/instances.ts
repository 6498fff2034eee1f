import { createHash } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { pipeline } from "stream/promises";
import type { Catalog, VmGroupRecord, VmRecord, VmState } from "../catalog";
import { checkDigest, checkVmId } from "../catalog/validate";
import { notFound } from "../common/errors";
import { extractImage, ImageStore, Manifest } from "../image";
import { driverFor, driverForKind, InstanceDriver, InstanceHandle, loadHandle, logPath } from "./vm";
import { readLogTail } from "./vm/host";
import { syncTree, writeFileDurably } from "./durable";
import { failpoint } from "./failpoint";
import type { Logger } from "./log";

/** Where an instance manager lives. */
export interface InstanceManagerArgs {
  readonly datacenter: string;
  readonly dataDir: string;
  readonly store: ImageStore;
  readonly catalog: Catalog;
  readonly log: Logger;
}

/** The file that marks an extracted image whole; written last, durably. */
const COMPLETE_MARKER = ".complete";
/** How long an instance may take from start to ready before it is marked failed. */
const READY_TIMEOUT_MS = 180_000;
/** Instances started at once; QEMU guests are CPU-bound, process instances are cheap. */
const STARTS_IN_FLIGHT = { vm: 8, process: 25 } as const;
/** How often the watchdog looks for running instances whose process died. */
export const WATCH_INTERVAL_MS = 1000;
/** An instance revived this long ago that dies again has not crash-looped: it is restarted at once. */
const STABLE_AFTER_MS = 30_000;
/** The watchdog's backoff for an instance that keeps dying: 1 s, doubling, at most a minute. */
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 60_000;

/** The wait before restarting an instance that died for the `deaths`-th time in a row. */
export function reviveDelay(deaths: number): number {
  return deaths <= 1 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (deaths - 2));
}

/** A restart the watchdog will make: when, the how-manieth death in a row, and when it saw the death. */
interface Due {
  readonly at: number;
  readonly deaths: number;
  readonly seenAt: number;
}

/** What the watchdog remembers of an instance it restarted: deaths in a row and when it last restarted it. */
interface Revival {
  readonly deaths: number;
  readonly at: number;
}

/**
 * An instance's id: derived from its start request and index, so a repeated request (also
 * after a crash) names the same instances and never starts a second one. catalog/validate.ts
 * checkVmId accepts exactly this format.
 */
export function instanceId(kind: "vm" | "process", requestId: string, index: number): string {
  const group = createHash("sha256").update(requestId).digest("hex").slice(0, 10);
  return `${kind === "vm" ? "vm" : "proc"}-${group}-${index}`;
}

/** The index encoded in an instance id. */
export function instanceIndex(id: string): number {
  return Number(id.slice(id.lastIndexOf("-") + 1));
}

/**
 * Runs a datacenter's instances (QEMU guests or process instances) and keeps the catalog's
 * VM records true: provisioning -> booting -> running, or failed; stopped when asked.
 * Instances outlive the cluster manager; `recover()` finds them again after a restart.
 */
export class InstanceManager {
  private readonly groupLocks = new Map<string, Promise<unknown>>();
  private readonly extracting = new Map<string, Promise<string>>();
  /** Per digest, how many converges are using its extracted image now. */
  private readonly converging = new Map<string, number>();
  /** The watchdog (see startWatchdog): its timer, what it restarted, what waits for its backoff. */
  private watchTimer?: NodeJS.Timeout;
  private watching = false;
  private readonly revivals = new Map<string, Revival>();
  private readonly due = new Map<string, Due>();
  private readonly reviving = new Map<string, Promise<void>>();
  /** Run folders whose handle the watchdog could not read, named in the log once each. */
  private readonly badHandles = new Set<string>();

  constructor(private readonly args: InstanceManagerArgs) {}

  /** <data>/instances/<id>, for a checked VM id only: ids come back from the catalog. */
  private runDir(id: string): string {
    return path.join(this.args.dataDir, "instances", checkVmId("VM id", id));
  }

  /** Serializes work on one group (start, scale, stop), in this process. */
  private withGroup<T>(requestId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.groupLocks.get(requestId) ?? Promise.resolve();
    // The previous holder's failure was already reported to its own caller; here it only ends
    // that holder's turn, so the next one runs either way.
    const next = prev.catch(() => undefined).then(fn);
    this.groupLocks.set(requestId, next);
    return next.finally(() => {
      if (this.groupLocks.get(requestId) === next) this.groupLocks.delete(requestId);
    });
  }

  private async put(vm: Omit<VmRecord, "updatedAt">): Promise<void> {
    await this.args.catalog.putVm({ ...vm, updatedAt: Date.now() });
  }

  /** Records the group's instances as provisioning (before the image is here), so they show at once. */
  async placeholders(group: VmGroupRecord, kind: "vm" | "process"): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < group.count; i++) {
      const id = instanceId(kind, group.requestId, i);
      ids.push(id);
      if (!(await this.args.catalog.getVm(id))) {
        await this.put({
          id,
          requestId: group.requestId,
          datacenter: group.datacenter,
          digest: group.digest,
          state: "provisioning",
          addresses: {},
        });
      }
    }
    return ids;
  }

  /**
   * Makes the group's running instances match its count: starts the missing ones (and those
   * stopped or failed), stops those past the count. Returns the ids of the group, in order.
   */
  converge(group: VmGroupRecord, onProgress?: (ready: number, total: number) => void): Promise<string[]> {
    return this.withGroup(group.requestId, () =>
      this.usingImage(group.digest, () => this.convergeNow(group, onProgress)),
    );
  }

  /** Runs `fn` with `digest`'s extracted image marked in use, so the collector leaves it. */
  private async usingImage<T>(digest: string, fn: () => Promise<T>): Promise<T> {
    this.converging.set(digest, (this.converging.get(digest) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      const n = (this.converging.get(digest) ?? 1) - 1;
      if (n === 0) this.converging.delete(digest);
      else this.converging.set(digest, n);
    }
  }

  private async convergeNow(
    group: VmGroupRecord,
    onProgress?: (ready: number, total: number) => void,
  ): Promise<string[]> {
    // A group stopped (forgotten) while this converge waited for its turn gets no instances.
    if (!(await this.args.catalog.getVmGroup(group.requestId))) {
      throw notFound(
        `start request ${group.requestId} was stopped meanwhile: start it again with a new request id`,
      );
    }
    const entry = await this.args.store.get(group.digest);
    if (!entry) throw notFound(`image ${group.digest} is not stored in ${this.args.datacenter}`);
    const driver = driverFor(entry.manifest);
    driver.validate(entry.manifest);
    const imageDir = await this.imageDir(group.digest);
    const existing = await this.args.catalog.listVms({ requestId: group.requestId });
    for (const vm of existing.filter((v) => instanceIndex(v.id) >= group.count)) await this.stopOne(vm, true);
    const ids = await this.placeholders(group, driver.kind);
    let ready = 0;
    onProgress?.(0, ids.length);
    await inBatches(ids, STARTS_IN_FLIGHT[driver.kind], async (id) => {
      await this.ensureRunning(id, group, driver, entry.manifest, imageDir);
      onProgress?.(++ready, ids.length);
    });
    return ids;
  }

  private async ensureRunning(
    id: string,
    group: VmGroupRecord,
    driver: InstanceDriver,
    manifest: Manifest,
    imageDir: string,
  ): Promise<void> {
    const { catalog, log, datacenter } = this.args;
    const runDir = this.runDir(id);
    const known = loadHandle(runDir);
    const record = await catalog.getVm(id);
    if (known && driver.isRunning(known) && record?.state === "running") return;
    if (known) await driver.stop(known, 5000);
    fs.rmSync(runDir, { recursive: true, force: true });
    fs.mkdirSync(runDir, { recursive: true });
    const base = { id, requestId: group.requestId, datacenter, digest: group.digest };
    // A restart (the watchdog's, or a repeated start's) must not leave the old "running" in the
    // catalog while the new process boots: it is provisioning until driver.start has it booting.
    if (record !== undefined && record.state !== "provisioning")
      await this.put({ ...base, state: "provisioning", addresses: {} });
    try {
      failpoint("instance.start");
      const handle = await driver.start({
        id,
        datacenter,
        digest: group.digest,
        imageDir,
        manifest,
        vcpus: group.vcpus,
        memoryMiB: group.memoryMiB,
        runDir,
      });
      await this.put({ ...base, state: "booting", addresses: handle.addresses });
      log.info("instance.booting", { requestId: group.requestId, id, kind: driver.kind, pid: handle.pid });
      await driver.waitReady(handle, READY_TIMEOUT_MS);
      await this.put({ ...base, state: "running", addresses: handle.addresses });
      log.info("instance.running", { requestId: group.requestId, id, addresses: handle.addresses });
    } catch (e) {
      log.warn("instance.failed", { requestId: group.requestId, id, error: String(e) });
      const handle = loadHandle(runDir);
      // The start's own error (logged above, rethrown below) is the one to report; an instance
      // that would not stop is still recorded as failed and found by its handle on a later stop.
      if (handle) await driver.stop(handle, 2000).catch(() => undefined);
      await this.put({ ...base, state: "failed", addresses: {} });
      throw e;
    }
  }

  /** Where images are extracted: <data>/rootfs/<digest hex>. */
  private rootfsRoot(): string {
    return path.join(this.args.dataDir, "rootfs");
  }

  /**
   * The image extracted once per digest under <data>/rootfs, shared read-only by its instances.
   * Every file, directory and the `.complete` marker are fsync'd, the marker last: after a
   * power loss a marked image is whole, and an unmarked one is extracted again.
   */
  private imageDir(digest: string): Promise<string> {
    const dir = path.join(this.rootfsRoot(), checkDigest(digest).slice("sha256:".length));
    let pending = this.extracting.get(digest);
    if (!pending) {
      pending = (async () => {
        if (fs.existsSync(path.join(dir, COMPLETE_MARKER))) return dir;
        fs.rmSync(dir, { recursive: true, force: true });
        fs.mkdirSync(path.dirname(dir), { recursive: true });
        const archive = `${dir}.tar.tmp`;
        await pipeline(await this.args.store.openArchive(digest), fs.createWriteStream(archive));
        try {
          await extractImage(archive, dir, { expectedDigest: digest });
        } finally {
          fs.rmSync(archive, { force: true });
        }
        await syncTree(dir);
        await writeFileDurably(path.join(dir, COMPLETE_MARKER), digest);
        return dir;
      })().finally(() => this.extracting.delete(digest));
      this.extracting.set(digest, pending);
    }
    return pending;
  }

  /**
   * Removes the extracted images (and half-written archives) of every digest not in `keep`
   * and not being extracted right now; returns how many images it removed.
   */
  async collectExtracted(keep: ReadonlySet<string>): Promise<number> {
    const root = this.rootfsRoot();
    if (!fs.existsSync(root)) return 0;
    let removed = 0;
    for (const name of fs.readdirSync(root)) {
      const hex = /^([0-9a-f]{64})(\.tar\.tmp)?$/.exec(name)?.[1];
      // Anything else was not made by imageDir: left alone.
      if (hex === undefined) continue;
      const digest = `sha256:${hex}`;
      if (keep.has(digest) || this.extracting.has(digest) || this.converging.has(digest)) continue;
      // Synchronous: no converge can start using the directory between the check and the removal.
      fs.rmSync(path.join(root, name), { recursive: true, force: true });
      if (!name.endsWith(".tmp")) removed++;
    }
    return removed;
  }

  /** Stops one instance; `forget` removes its record, otherwise it stays as "stopped". */
  private async stopOne(vm: VmRecord, forget: boolean): Promise<void> {
    const handle = loadHandle(this.runDir(vm.id));
    if (handle) {
      await this.put({ ...vm, state: "stopping" });
      await driverOf(handle).stop(handle, 10_000);
    }
    fs.rmSync(this.runDir(vm.id), { recursive: true, force: true });
    if (forget) await this.args.catalog.deleteVm(vm.id);
    else await this.put({ ...vm, state: "stopped", addresses: {} });
    this.args.log.info("instance.stopped", { requestId: vm.requestId, id: vm.id, forgotten: forget });
  }

  /**
   * Stops a group's instances: all of them (the group is then forgotten), or only `vmIds`
   * (they stay recorded as "stopped", so the group's count shows the gap).
   */
  stop(requestId: string, vmIds: readonly string[] = []): Promise<number> {
    return this.withGroup(requestId, async () => {
      const vms = await this.args.catalog.listVms({ requestId });
      const chosen = vmIds.length > 0 ? vms.filter((v) => vmIds.includes(v.id)) : vms;
      const missing = vmIds.filter((id) => !vms.some((v) => v.id === id));
      if (missing.length > 0)
        throw notFound(`VMs ${missing.join(", ")} are not part of start request ${requestId}`);
      await Promise.all(chosen.map((vm) => this.stopOne(vm, vmIds.length === 0)));
      if (vmIds.length === 0) await this.args.catalog.deleteVmGroup(requestId);
      return chosen.length;
    });
  }

  /** Stops then starts one instance again (same id, same addresses may change). */
  async restart(vmId: string): Promise<void> {
    const vm = await this.args.catalog.getVm(vmId);
    if (!vm) throw notFound(`VM ${vmId} is not known: list them with \`gci vm ls\``);
    const group = await this.args.catalog.getVmGroup(vm.requestId);
    if (!group) throw notFound(`VM ${vmId} belongs to no start request any more`);
    await this.withGroup(vm.requestId, () => this.stopOne(vm, false));
    await this.converge(group);
  }

  /**
   * The tail of an instance's console or output: only `<runDir>/<its kind's log file>`, never a
   * path a handle names (loadHandle refuses a handle of another folder), and not through a symlink.
   */
  logs(vmId: string, tailBytes: number): string {
    const runDir = this.runDir(vmId);
    const handle = loadHandle(runDir);
    // The log GCI writes in the run folder (never a path from the handle), and the file rotated
    // before it (both drivers cap their logs); a symlink planted there is refused, not followed.
    return handle ? readLogTail(logPath(runDir, handle.kind), tailBytes) : "";
  }

  /**
   * After a restart: instances still running are kept (booting ones are watched until
   * ready); those whose process is gone are marked failed. None is forgotten or duplicated.
   */
  async recover(): Promise<void> {
    const { catalog, log, datacenter } = this.args;
    for (const vm of await catalog.listVms({ datacenter })) {
      // One bad run folder (a planted handle) does not keep the others from being recovered.
      await this.recoverOne(vm).catch((e) =>
        log.warn("instance.recover_failed", { requestId: vm.requestId, id: vm.id, error: String(e) }),
      );
    }
  }

  private async recoverOne(vm: VmRecord): Promise<void> {
    const live: VmState[] = ["provisioning", "booting", "running", "stopping"];
    if (!live.includes(vm.state)) return;
    const handle = loadHandle(this.runDir(vm.id));
    const alive = handle !== undefined && driverOf(handle).isRunning(handle);
    if (alive && vm.state === "booting") {
      driverOf(handle)
        .waitReady(handle, READY_TIMEOUT_MS)
        .then(
          () => this.put({ ...vm, state: "running", addresses: handle.addresses }),
          () => this.put({ ...vm, state: "failed", addresses: {} }),
        )
        .catch((e: unknown) =>
          this.args.log.warn("instance.recover_failed", { id: vm.id, error: String(e) }),
        );
    } else if (!alive) {
      // Nothing runs in this new process yet, so an instance without a live process (even one
      // still "provisioning" when the old process died) has failed; a repeated start restarts it.
      await this.put({ ...vm, state: "failed", addresses: {} });
    }
    this.args.log.info("instance.recovered", { requestId: vm.requestId, id: vm.id, alive, state: vm.state });
  }

  /**
   * Starts the watchdog: every WATCH_INTERVAL_MS it looks for instances of this datacenter
   * recorded running whose process is gone (kill -9 of a process instance's supervisor, of a
   * QEMU process, an entrypoint that exited) and restarts each through its group's converge
   * path (same id, same group lock, so never a second process). One that keeps dying waits
   * reviveDelay between restarts, logged as instance.crash_loop, so a broken image cannot spin
   * the host. Instances being stopped, stopped, or still starting are left alone.
   */
  startWatchdog(): void {
    if (this.watchTimer) return;
    this.watchTimer = setInterval(() => {
      if (this.watching) return;
      this.watching = true;
      this.watchOnce()
        .catch((e) => this.args.log.warn("watchdog.failed", { error: String(e) }))
        .finally(() => (this.watching = false));
    }, WATCH_INTERVAL_MS);
    this.watchTimer.unref();
  }

  /**
   * Stops the watchdog and waits (at most `waitMs`: a guest's boot can take minutes) for the
   * restarts it began; one still booting is found again by the next start (recover).
   */
  async stopWatchdog(waitMs = 10_000): Promise<void> {
    clearInterval(this.watchTimer);
    this.watchTimer = undefined;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
    await Promise.race([Promise.all([...this.reviving.values()]), bound]);
    clearTimeout(timer);
  }

  /** One look of the watchdog. */
  private async watchOnce(): Promise<void> {
    const vms = await this.args.catalog.listVms({ datacenter: this.args.datacenter });
    const known = new Set(vms.map((v) => v.id));
    for (const id of [...this.revivals.keys()]) if (!known.has(id)) this.forgetRevival(id);
    const now = Date.now();
    for (const vm of vms) {
      if (this.reviving.has(vm.id)) continue;
      if (!this.isDead(vm)) {
        // Running again for long enough: no longer the watchdog's to retry if it fails later.
        const last = this.revivals.get(vm.id);
        if (vm.state === "running" && last !== undefined && now - last.at >= STABLE_AFTER_MS)
          this.forgetRevival(vm.id);
        continue;
      }
      const due = this.due.get(vm.id) ?? this.schedule(vm, now);
      if (now < due.at) continue;
      this.due.delete(vm.id);
      const revival = this.revive(vm, due).finally(() => this.reviving.delete(vm.id));
      this.reviving.set(vm.id, revival);
    }
  }

  private forgetRevival(id: string): void {
    this.revivals.delete(id);
    this.due.delete(id);
    this.badHandles.delete(id);
  }

  /**
   * Whether `vm` should run and does not: recorded running with its process gone, or failed —
   * killed while it booted, dead before the daemon restarted, or failed after a restart by the
   * watchdog. A group is desired state: every instance below its count is brought back, backing
   * off (reviveDelay) when it keeps failing. revive() re-checks under the group's lock, so a start
   * still converging, or one that rolled its group back, is never raced.
   */
  private isDead(vm: VmRecord): boolean {
    if (vm.state === "failed") return true;
    if (vm.state !== "running") return false;
    try {
      const handle = loadHandle(this.runDir(vm.id));
      return handle === undefined || !driverOf(handle).isRunning(handle);
    } catch (e) {
      if (!this.badHandles.has(vm.id)) {
        this.badHandles.add(vm.id);
        this.args.log.warn("watchdog.bad_handle", { requestId: vm.requestId, id: vm.id, error: String(e) });
      }
      return false;
    }
  }

  /** When to restart `vm`, which just died: at once, or after the backoff of a crash loop. */
  private schedule(vm: VmRecord, now: number): Due {
    const last = this.revivals.get(vm.id);
    const deaths = last !== undefined && now - last.at < STABLE_AFTER_MS ? last.deaths + 1 : 1;
    const delay = reviveDelay(deaths);
    const due = { at: now + delay, deaths, seenAt: now };
    this.due.set(vm.id, due);
    const fields = { requestId: vm.requestId, id: vm.id, state: vm.state, deaths };
    if (delay > 0) this.args.log.warn("instance.crash_loop", { ...fields, retryInMs: delay });
    else this.args.log.warn("instance.died", fields);
    return due;
  }

  /**
   * Restarts one dead instance under its group's lock, after checking again there that it is
   * still recorded as it was and its process still gone (a stop marks it "stopping" before it
   * ends the process, so an instance being stopped is never restarted).
   */
  private async revive(dead: VmRecord, { deaths, seenAt }: Due): Promise<void> {
    const { catalog, log } = this.args;
    try {
      await this.withGroup(dead.requestId, async () => {
        const group = await catalog.getVmGroup(dead.requestId);
        const vm = await catalog.getVm(dead.id);
        if (!group || group.datacenter !== this.args.datacenter || instanceIndex(dead.id) >= group.count)
          return;
        if (!vm || vm.state !== dead.state || !this.isDead(vm)) return;
        this.revivals.set(vm.id, { deaths, at: Date.now() });
        await this.usingImage(group.digest, async () => {
          const entry = await this.args.store.get(group.digest);
          if (!entry) throw notFound(`image ${group.digest} is not stored in ${this.args.datacenter}`);
          const driver = driverFor(entry.manifest);
          const imageDir = await this.imageDir(group.digest);
          await this.ensureRunning(vm.id, group, driver, entry.manifest, imageDir);
        });
        // From the death seen to the instance ready again (the kill itself was up to a watch interval earlier).
        log.info("instance.revived", {
          requestId: vm.requestId,
          id: vm.id,
          deaths,
          tookMs: Date.now() - seenAt,
        });
      });
    } catch (e) {
      log.warn("instance.revive_failed", {
        requestId: dead.requestId,
        id: dead.id,
        deaths,
        error: String(e),
      });
    }
  }

  /** Stops every instance of this datacenter (the datacenter is shutting down). */
  async stopAll(): Promise<void> {
    const vms = await this.args.catalog.listVms({ datacenter: this.args.datacenter });
    await Promise.all(
      vms
        .filter((v) => v.state !== "stopped" && v.state !== "failed")
        .map((vm) =>
          this.stopOne(vm, false).catch((e) =>
            this.args.log.warn("instance.stop_failed", { id: vm.id, error: String(e) }),
          ),
        ),
    );
  }
}

function driverOf(handle: InstanceHandle): InstanceDriver {
  return driverForKind(handle.kind);
}

async function inBatches<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const queue = [...items];
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.min(width, queue.length) }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
        await fn(item).catch((e) => errors.push(e));
      }
    }),
  );
  if (errors.length > 0) throw errors[0];
}
