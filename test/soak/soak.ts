/**
 * The soak (issue 11): a world with a large image and shaped transfers, one fault per round
 * at a random moment, recovery as an operator would do it (`gci world up`, a client that
 * retries, `pulumi cancel` + `up` again), then the invariants checked from outside
 * (outside.ts). test/soak/main.ts is its command line; soak.test.ts runs a short form.
 */

import { execFile, spawn } from "child_process";
import { randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { Catalog, openCatalog } from "../../provider/catalog";
import { ClusterClient, Operation, waitForOperation } from "../../provider/common/client";
import { CHUNK_SIZE } from "../../provider/image";
import { engineEnv } from "../../provider/pulumi/engine/env";
import { engineBinDir, packageRoot } from "../../provider/common/paths";
import { daemonGone, readWorld, startWorld, stopWorld, WorldSpec, WorldState } from "../../provider/world";
import { EtcdCluster, startEtcdCluster } from "../support/etcd";
import { makeImage } from "../support/world";
import {
  Chunk,
  chunkFile,
  instanceRoots,
  listProcesses,
  pluginProcesses,
  storeRecord,
  unreferencedChunks,
  verifiedChunkBytes,
  verifyCopy,
  writtenBytes,
} from "./outside";

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const REPO = packageRoot();
/** Writes of a sender that are not chunk bytes (its log, catalog, protocol) allowed on top of the bound. */
const WRITE_SLACK = 1 * MiB;
/**
 * Seconds an engine kill may take to VMs running: it includes a whole second `pulumi up`
 * (program compile, engine start), which other kinds have no equivalent of.
 */
const ENGINE_RECOVERY_S = 120;

export const FAULTS = [
  "receiver-kill",
  "sender-kill",
  "supervisor-kill",
  "concurrent-start",
  "remove-during-transfer",
  "etcd-member-kill",
  "engine-kill",
] as const;
export type FaultKind = (typeof FAULTS)[number];

export interface SoakOptions {
  readonly rounds: number;
  readonly seed: number;
  /** Round numbers start here (replay one round: --first-round R --rounds 1). */
  readonly firstRound?: number;
  readonly catalog: "sqlite" | "etcd";
  readonly imageMiB: number;
  /** --max-transfer-rate of every cluster manager, bytes/s. */
  readonly rateBytes: number;
  /** Fault kinds to rotate through (default: all that apply to the catalog). */
  readonly faults?: readonly FaultKind[];
  /** How long recovery may take before the round counts a violation, ms. */
  readonly recoveryTimeoutMs?: number;
  readonly log?: (line: string) => void;
  /** Keep the soak's folder (world, logs, stores) afterwards, to look into a violation. */
  readonly keep?: boolean;
}

export interface Violation {
  readonly kind: string;
  readonly detail: string;
}

export interface RoundResult {
  readonly round: number;
  readonly fault: FaultKind;
  /** Fault to VMs running again (or transfer complete / removal done); undefined = never. */
  readonly recoverySeconds?: number;
  readonly note: string;
  readonly violations: Violation[];
}

export interface SoakSummary {
  readonly rounds: number;
  readonly seed: number;
  readonly catalog: string;
  readonly violations: number;
  readonly violationsByKind: Record<string, number>;
  readonly recoverySeconds: Record<
    string,
    { n: number; min: number; median: number; p90: number; max: number }
  >;
  readonly unrecovered: Record<string, number>;
}

/** mulberry32: a small seeded generator, so a round can be replayed from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every 100 ms until it is truthy; undefined when `timeoutMs` passes first. */
async function poll<T>(fn: () => Promise<T> | T, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      // A daemon restarting, a catalog busy: try again.
    }
    if (Date.now() > deadline) return undefined;
    await sleep(100);
  }
}

/** The world the soak runs and what it needs to drive it. */
class SoakWorld {
  readonly spec: WorldSpec;
  readonly configFile: string;
  baseImage!: { file: string; digest: string; sizeBytes: number };
  private imageCount = 0;

  constructor(
    readonly dir: string,
    readonly opts: SoakOptions,
    readonly etcd: EtcdCluster | undefined,
  ) {
    this.spec = {
      regions: { a: ["a-1"], b: ["b-1"] },
      vcpus: 64,
      memoryMiB: 65536,
      ...(etcd ? { catalog: `etcd://${etcd.endpoints.join(",")}` } : {}),
    };
    this.configFile = path.join(dir, "world-config.json");
    fs.writeFileSync(this.configFile, JSON.stringify(this.spec));
  }

  get worldDir(): string {
    return path.join(this.dir, "world");
  }

  state(): WorldState {
    const s = readWorld(this.worldDir);
    if (!s) throw new Error(`no world.json in ${this.worldDir}`);
    return s;
  }

  dc(name: string) {
    const d = this.state().datacenters.find((x) => x.name === name);
    if (!d) throw new Error(`no datacenter ${name}`);
    return d;
  }

  store(name: string): string {
    return path.join(this.dc(name).dataDir, "images");
  }

  async up(): Promise<void> {
    await startWorld(this.worldDir, this.spec, ["--max-transfer-rate", String(this.opts.rateBytes)]);
  }

  /** Recovery after a daemon kill, as an operator does it: `gci world up` on the same world. */
  async operatorWorldUp(): Promise<void> {
    await execFileP(
      process.execPath,
      [
        path.join(REPO, "bin", "gci"),
        "world",
        "up",
        "--world",
        this.worldDir,
        "--config",
        this.configFile,
        "--max-transfer-rate",
        String(this.opts.rateBytes),
        "--json",
      ],
      { timeout: 90_000, maxBuffer: 16 * MiB },
    );
  }

  /** Runs `fn` with a fresh client of `dc` at its current endpoint. */
  async with<T>(dc: string, fn: (c: ClusterClient) => Promise<T>): Promise<T> {
    const c = new ClusterClient(this.dc(dc).endpoint, { deadlineMs: 15_000 });
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  }

  /** A client that retries across restarts: `fn` again on the then-current endpoint until it succeeds. */
  async retry<T>(dc: string, fn: (c: ClusterClient) => Promise<T>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.with(dc, fn);
      } catch (e) {
        // A GciError names its code ("UNAVAILABLE"); a raw gRPC error carries the number (14).
        const code = (e as { code?: string | number }).code;
        const retryable =
          code === undefined ||
          ["UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "ABORTED", "UNKNOWN", 14, 4, 13, 10, 2].includes(
            code,
          );
        if (!retryable || Date.now() > deadline) throw e;
        await sleep(250);
      }
    }
  }

  async catalog<T>(fn: (c: Catalog) => Promise<T>): Promise<T> {
    const c = await openCatalog(this.state().catalog);
    try {
      return await fn(c);
    } finally {
      await c.close();
    }
  }

  /** A fresh large image (its own digest, so the round transfers it), pushed to a-1. */
  async freshImage(): Promise<{ file: string; digest: string; sizeBytes: number }> {
    const img = await makeImage(this.dir, { name: `soak-${++this.imageCount}`, sizeMiB: this.opts.imageMiB });
    await this.retry("a-1", (c) =>
      c.uploadImage(fs.createReadStream(img.file), { request_id: randomUUID(), name: "" }),
    );
    fs.rmSync(img.file, { force: true });
    return img;
  }

  async placement(digest: string, dc: string) {
    return this.catalog((c) => c.getPlacement(digest, dc));
  }

  /** Instances of the group running from outside: its catalog VMs with exactly one live root process. */
  async liveCount(requestId: string, dc: string): Promise<number> {
    const vms = await this.catalog((c) => c.listVms({ requestId }));
    const roots = instanceRoots(this.dc(dc).dataDir);
    return vms.filter((v) => v.state === "running" && (roots.get(v.id)?.length ?? 0) === 1).length;
  }

  /** kill -9 of a datacenter's cluster manager; its pid. */
  killDaemon(dc: string): number {
    const d = this.dc(dc);
    if (daemonGone(d) === undefined) process.kill(d.pid, "SIGKILL");
    return d.pid;
  }

  /** Stops a round's groups and removes its images, so rounds do not pile up (best effort). */
  async cleanup(groups: { requestId: string; dc: string }[], digests: string[]): Promise<void> {
    for (const g of groups) {
      await this.retry(
        g.dc,
        async (c) => {
          const op = await c.stopVms(randomUUID(), g.requestId);
          await waitForOperation(c, op, { timeoutMs: 30_000 });
        },
        20_000,
      ).catch(() => undefined);
    }
    for (const digest of digests) {
      for (const dc of ["b-1", "a-1"]) {
        await this.retry(dc, (c) => c.deleteImage(randomUUID(), digest), 10_000).catch(() => undefined);
      }
    }
  }
}

/** What one round reports back to the loop. */
interface FaultOutcome {
  recoverySeconds?: number;
  note: string;
  violations: Violation[];
  groups: { requestId: string; dc: string }[];
  digests: string[];
}

const secondsSince = (t: number): number => +((Date.now() - t) / 1000).toFixed(2);

/** Starts `count` nano instances with `requestId` through `dc`, retrying across restarts, and waits for the operation. */
async function startAndWait(
  w: SoakWorld,
  dc: string,
  target: string,
  digest: string,
  requestId: string,
  count: number,
  timeoutMs: number,
): Promise<Operation> {
  const deadline = Date.now() + timeoutMs;
  const op = await w.retry(
    dc,
    (c) =>
      c.startVms({
        request_id: requestId,
        image_digest: digest,
        datacenter: target,
        count,
        machine_size: "nano",
      }),
    timeoutMs,
  );
  // The operation lives in the datacenter that runs it (a forwarded start returns the target's).
  return w.retry(
    target,
    (c) => waitForOperation(c, op, { timeoutMs: 30_000 }),
    Math.max(1000, deadline - Date.now()),
  );
}

/** Waits until the group has `count` live instances; the seconds since `t0`, or undefined. */
async function vmsBack(
  w: SoakWorld,
  requestId: string,
  dc: string,
  count: number,
  t0: number,
  timeoutMs: number,
) {
  const ok = await poll(async () => (await w.liveCount(requestId, dc)) === count, timeoutMs);
  return ok ? secondsSince(t0) : undefined;
}

/**
 * Waits until `frac` of the image's chunk files are in b-1's store (seen from outside, by
 * file, every 20 ms): "under way" then, or "finished" / "never started" when that moment was missed.
 */
async function midTransfer(
  w: SoakWorld,
  img: { digest: string; sizeBytes: number },
  chunks: readonly Chunk[],
  frac: number,
): Promise<"under way" | "finished" | "never started"> {
  const store = w.store("b-1");
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (storeRecord(store, img.digest) !== undefined) return "finished";
    const have = chunks
      .filter((c) => fs.existsSync(chunkFile(store, c.sha256)))
      .reduce((n, c) => n + c.size, 0);
    if (have >= frac * img.sizeBytes) return "under way";
    await sleep(20);
  }
  return "never started";
}

/** kill -9 of the receiving or sending cluster manager while a start pulls a fresh image into b-1. */
async function transferKill(
  w: SoakWorld,
  r: () => number,
  victim: "b-1" | "a-1",
  timeoutMs: number,
): Promise<FaultOutcome> {
  const img = await w.freshImage();
  const requestId = randomUUID();
  const out: FaultOutcome = {
    note: "",
    violations: [],
    groups: [{ requestId, dc: "b-1" }],
    digests: [img.digest],
  };
  const chunks = storeRecord(w.store("a-1"), img.digest)?.chunks ?? [];
  const frac = 0.1 + r() * 0.7;
  // The first client does not retry: it goes down with the daemon it talks to.
  const starting = w
    .with("b-1", async (c) => {
      const op = await c.startVms({
        request_id: requestId,
        image_digest: img.digest,
        datacenter: "b-1",
        count: 2,
        machine_size: "nano",
      });
      return waitForOperation(c, op, { timeoutMs: 120_000 });
    })
    .catch((e: Error) => e);
  const reached = await midTransfer(w, img, chunks, frac);
  if (reached !== "under way")
    out.note = `fault missed: the transfer ${reached} before ${(frac * 100).toFixed(0)}%`;
  const verifiedBefore = verifiedChunkBytes(w.store("b-1"), chunks);
  const sender = w.dc("a-1").pid;
  const writtenAtKill = writtenBytes(sender) ?? 0;
  const t0 = Date.now();
  w.killDaemon(victim);
  // The operator acts at once; the first client (which may still wait on the live receiver) is left to end on its own.
  try {
    await w.operatorWorldUp();
  } catch (e) {
    out.violations.push({ kind: "world-up-failed", detail: (e as Error).message.slice(0, 300) });
  }
  await starting;
  try {
    await startAndWait(w, "b-1", "b-1", img.digest, requestId, 2, timeoutMs);
  } catch (e) {
    out.violations.push({ kind: "start-not-finished", detail: (e as Error).message.slice(0, 300) });
  }
  out.recoverySeconds = await vmsBack(w, requestId, "b-1", 2, t0, timeoutMs);
  // Bytes the sender wrote after the kill: the same process's wchar since, or a new one's in all.
  const senderNow = w.dc("a-1").pid;
  const resent = (writtenBytes(senderNow) ?? 0) - (senderNow === sender ? writtenAtKill : 0);
  const bound = img.sizeBytes - verifiedBefore + CHUNK_SIZE + WRITE_SLACK;
  out.note += `${out.note ? "; " : ""}killed at ${(frac * 100).toFixed(0)}%, ${(verifiedBefore / MiB).toFixed(0)} MiB verified before, re-sent ${(resent / MiB).toFixed(1)} MiB (bound ${(bound / MiB).toFixed(1)})`;
  if (reached === "under way" && resent > bound) {
    out.violations.push({
      kind: "bytes-resent",
      detail: `${resent} bytes written by the sender after the kill > bound ${bound} (image ${img.sizeBytes} - verified ${verifiedBefore} + one chunk + ${WRITE_SLACK} slack)`,
    });
  }
  return out;
}

/** kill -9 of one process instance's sandbox, at a random moment of its group's start. */
async function supervisorKill(w: SoakWorld, r: () => number, timeoutMs: number): Promise<FaultOutcome> {
  const requestId = randomUUID();
  const out: FaultOutcome = { note: "", violations: [], groups: [{ requestId, dc: "a-1" }], digests: [] };
  const started = startAndWait(w, "a-1", "a-1", w.baseImage.digest, requestId, 2, timeoutMs).catch(
    (e: Error) => e,
  );
  await sleep(r() * 3000);
  const victim = await poll(async () => {
    const vms = await w.catalog((c) => c.listVms({ requestId }));
    const roots = instanceRoots(w.dc("a-1").dataDir);
    const live = vms.filter((v) => (roots.get(v.id)?.length ?? 0) > 0);
    return live.length > 0 ? { id: live[0].id, pid: roots.get(live[0].id)![0] } : undefined;
  }, 30_000);
  if (!victim) {
    out.violations.push({ kind: "vm-count", detail: `no instance process of ${requestId} appeared in 30 s` });
    return out;
  }
  const t0 = Date.now();
  process.kill(victim.pid, "SIGKILL");
  // Gone for /proc before anything is counted, so the dying process is not taken for a live one.
  await poll(() => !listProcesses().some((p) => p.pid === victim.pid), 5000);
  const res = await started;
  if (res instanceof Error) out.note = `the start reported: ${res.message.slice(0, 120)}`;
  out.recoverySeconds = await vmsBack(w, requestId, "a-1", 2, t0, timeoutMs);
  out.note += `${out.note ? "; " : ""}killed pid ${victim.pid} of ${victim.id}`;
  return out;
}

/** The same request id from two clients at once (one through a-1, one at b-1), and a different id beside them. */
async function concurrentStart(w: SoakWorld, r: () => number, timeoutMs: number): Promise<FaultOutcome> {
  const same = randomUUID();
  const other = randomUUID();
  const out: FaultOutcome = {
    note: "",
    violations: [],
    groups: [
      { requestId: same, dc: "b-1" },
      { requestId: other, dc: "b-1" },
    ],
    digests: [],
  };
  const t0 = Date.now();
  const gap = Math.floor(r() * 50);
  const results = await Promise.allSettled([
    startAndWait(w, "a-1", "b-1", w.baseImage.digest, same, 2, timeoutMs),
    sleep(gap).then(() => startAndWait(w, "b-1", "b-1", w.baseImage.digest, same, 2, timeoutMs)),
    sleep(r() * 50).then(() => startAndWait(w, "b-1", "b-1", w.baseImage.digest, other, 2, timeoutMs)),
  ]);
  for (const res of results) {
    if (res.status === "rejected")
      out.violations.push({ kind: "start-not-finished", detail: String(res.reason).slice(0, 300) });
  }
  const a = await vmsBack(w, same, "b-1", 2, t0, timeoutMs);
  const b = await vmsBack(w, other, "b-1", 2, t0, timeoutMs);
  out.recoverySeconds = a !== undefined && b !== undefined ? Math.max(a, b) : undefined;
  out.note = `second client ${gap} ms later`;
  return out;
}

/** A removal of the image at b-1 while it transfers there (a replicate). */
async function removeDuringTransfer(w: SoakWorld, r: () => number, timeoutMs: number): Promise<FaultOutcome> {
  const img = await w.freshImage();
  const out: FaultOutcome = { note: "", violations: [], groups: [], digests: [img.digest] };
  const chunks = storeRecord(w.store("a-1"), img.digest)?.chunks ?? [];
  const frac = 0.1 + r() * 0.7;
  const op = await w.retry("b-1", (c) => c.replicateImage(randomUUID(), img.digest, "b-1"));
  const reached = await midTransfer(w, img, chunks, frac);
  if (reached !== "under way") out.note = `fault missed: the transfer ${reached}; `;
  const t0 = Date.now();
  try {
    await w.with("b-1", (c) => c.deleteImage(randomUUID(), img.digest));
  } catch (e) {
    out.violations.push({ kind: "removal-refused", detail: (e as Error).message.slice(0, 300) });
  }
  const opDone = await poll(() => w.with("b-1", async (c) => (await c.getOperation(op.id)).done), timeoutMs);
  if (!opDone)
    out.violations.push({
      kind: "stuck-transfer",
      detail: `operation ${op.id} not done ${timeoutMs / 1000} s after the removal`,
    });
  const gone = await poll(async () => (await w.placement(img.digest, "b-1")) === undefined, timeoutMs);
  if (!gone) {
    const p = await w.placement(img.digest, "b-1");
    out.violations.push({
      kind: "removal-not-done",
      detail: `placement of ${img.digest} in b-1 is still "${p?.state}" ${timeoutMs / 1000} s after the removal`,
    });
  }
  const clean = await poll(() => unreferencedChunks(w.store("b-1"), chunks).length === 0, timeoutMs);
  if (!clean) {
    const left = unreferencedChunks(w.store("b-1"), chunks);
    out.violations.push({
      kind: "leaked-chunks",
      detail: `${left.length} chunk files of the removed transfer left in b-1's store`,
    });
  }
  out.recoverySeconds = gone && clean && opDone ? secondsSince(t0) : undefined;
  out.note += `removed at ${(frac * 100).toFixed(0)}%`;
  return out;
}

/** kill -9 of an etcd member (the leader half the time) during a start, then the operator starts it again. */
async function etcdMemberKill(w: SoakWorld, r: () => number, timeoutMs: number): Promise<FaultOutcome> {
  const etcd = w.etcd!;
  const requestId = randomUUID();
  const out: FaultOutcome = { note: "", violations: [], groups: [{ requestId, dc: "b-1" }], digests: [] };
  const leader = await etcd.leader();
  const member = r() < 0.5 ? leader : (leader + 1 + Math.floor(r() * 2)) % etcd.endpoints.length;
  const started = startAndWait(w, "b-1", "b-1", w.baseImage.digest, requestId, 2, timeoutMs).catch(
    (e: Error) => e,
  );
  await sleep(r() * 1500);
  const t0 = Date.now();
  await etcd.stopMember(member, "SIGKILL");
  await sleep(1000);
  await etcd.startMember(member);
  const res = await started;
  if (res instanceof Error) {
    out.note = `the first client saw: ${res.message.slice(0, 100)}; `;
    try {
      await startAndWait(w, "b-1", "b-1", w.baseImage.digest, requestId, 2, timeoutMs);
    } catch (e) {
      out.violations.push({ kind: "start-not-finished", detail: (e as Error).message.slice(0, 300) });
    }
  }
  out.recoverySeconds = await vmsBack(w, requestId, "b-1", 2, t0, timeoutMs);
  out.note += `killed member m${member}${member === leader ? " (leader)" : ""}`;
  return out;
}

/** SIGKILL of `pulumi up` (gci, the CLI and its plugins) at a random moment, then cancel and up again. */
async function engineKill(
  w: SoakWorld,
  r: () => number,
  round: number,
  timeoutMs: number,
): Promise<FaultOutcome> {
  const project = path.join(w.dir, `stack-${round}`);
  const stateDir = path.join(w.dir, `stack-${round}-state`);
  fs.mkdirSync(project, { recursive: true });
  // Its own image: destroying the stack deletes the Image resource's copy, which no other round may need.
  const image = await makeImage(w.dir, { name: `soak-stack-${round}`, sizeMiB: 4 });
  fs.writeFileSync(path.join(project, "Pulumi.yaml"), `name: soak${round}\nruntime: nodejs\n`);
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(project, "node_modules"));
  fs.writeFileSync(
    path.join(project, "index.ts"),
    // The package as a user's program imports it (its compiled dist/, "main" in package.json).
    `import * as gci from ${JSON.stringify(REPO)};
const catalog = gci.Catalog.fromWorld(${JSON.stringify(w.worldDir)});
const image = new gci.Image("img", { catalog, datacenter: "a-1", file: ${JSON.stringify(image.file)} });
const group = new gci.VirtualMachineGroup("web", { catalog, image, region: "b", count: 2, machineSize: "nano" });
export const requestId = group.requestId;
`,
  );
  // The raw pulumi CLI, as a user or a CI step runs it: it starts both GCI plugins
  // (language-host.js runs the program, dynamic-host.js the resources).
  const env = { ...process.env, ...engineEnv({ stateDir }) };
  const pulumi = (args: string[], timeout = 240_000) =>
    execFileP(path.join(engineBinDir(), "pulumi"), [...args, "--stack", "soak", "--cwd", project], {
      env,
      timeout,
      maxBuffer: 64 * MiB,
    });
  await pulumi(["stack", "init"]);
  const out: FaultOutcome = { note: "", violations: [], groups: [], digests: [] };
  const child = spawn(
    path.join(engineBinDir(), "pulumi"),
    ["up", "--yes", "--skip-preview", "--stack", "soak", "--cwd", project],
    { env, detached: true, stdio: "ignore" },
  );
  const done = new Promise<number>((resolve) => child.on("exit", (code) => resolve(code ?? -1)));
  // The kill lands while the plugins run (else it would test nothing): a random moment after
  // the first of them appears.
  const pluginsUp = await poll(() => pluginProcesses(stateDir).length > 0, 60_000);
  const delay = r() * 3000;
  const exited = await Promise.race([done.then(() => true), sleep(delay).then(() => false)]);
  const t0 = Date.now();
  if (exited || !pluginsUp) out.note = `fault missed: up ended before the kill; `;
  else killTree(child.pid!);
  await done;
  // The plugins go with the engine: none may be left once it is gone.
  const leaked = await poll(() => pluginProcesses(stateDir).length === 0, 10_000);
  if (!leaked) {
    const pids = pluginProcesses(stateDir);
    out.violations.push({
      kind: "leaked-plugin",
      detail: `plugin processes ${pids.join(", ")} alive 10 s after the engine was killed`,
    });
    for (const pid of pids) process.kill(pid, "SIGKILL");
  }
  // "VMs running again": the moment this round's group runs its 2 VMs in b-1, watched while the
  // operator's recovery (cancel, up again) runs — the cluster manager may finish a start the
  // killed engine had sent before the second up reaches it.
  let runningAt: number | undefined;
  let watching = true;
  const watch = (async () => {
    while (watching && runningAt === undefined) {
      const groups = await w.catalog((c) => c.listVmGroups("b-1")).catch(() => []);
      for (const g of groups.filter((g) => g.digest === image.digest))
        if ((await w.liveCount(g.requestId, "b-1")) === 2) runningAt = Date.now();
      await sleep(100);
    }
  })();
  await pulumi(["cancel", "--yes"]).catch(() => undefined); // no lock left when the kill missed
  await pulumi(["up", "--yes", "--skip-preview"]).catch(
    (e: { stdout?: string; stderr?: string; message: string }) => {
      // The CLI writes a program's failure to stdout, its own to stderr.
      const said = `${e.stdout ?? ""}${e.stderr ?? ""}`.trim() || e.message;
      out.violations.push({ kind: "engine-up-failed", detail: said.slice(-400) });
    },
  );
  const requestId = await pulumi(["stack", "output", "requestId"]).then(
    (x) => x.stdout.trim(),
    () => undefined,
  );
  if (requestId) {
    const back = await vmsBack(w, requestId, "b-1", 2, t0, timeoutMs);
    watching = false;
    await watch;
    out.recoverySeconds =
      back === undefined ? undefined : Math.round(((runningAt ?? Date.now()) - t0) / 10) / 100;
    out.groups.push({ requestId, dc: "b-1" });
  }
  watching = false;
  await watch;
  out.note += `killed ${Math.round(delay)} ms after the plugins started`;
  // The round's own clean-up: destroy the stack (its group), then drop the project.
  await pulumi(["destroy", "--yes", "--skip-preview"]).catch((e: Error) => {
    out.violations.push({ kind: "engine-destroy-failed", detail: e.message.slice(-300) });
  });
  fs.rmSync(project, { recursive: true, force: true });
  fs.rmSync(image.file, { force: true });
  return out;
}

/**
 * SIGKILL of `pulumi up` as an operator's kill -9 (or a CI runner's timeout) meets it: the gci
 * process and the pulumi CLI under it die, the plugin hosts the CLI started do not — they are
 * orphaned, and must notice on their own that their engine is gone (the leaked-plugin check).
 */
function killTree(pid: number): void {
  const procs = listProcesses();
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) for (const p of procs) if (p.ppid === tree[i]) tree.push(p.pid);
  const plugin = new Set(
    procs.filter((p) => /language-host\.js|dynamic-host\.js/.test(p.cmdline)).map((p) => p.pid),
  );
  for (const p of tree) {
    if (plugin.has(p)) continue;
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // Gone.
    }
  }
}

/** The invariants, from outside, after a round's recovery. */
async function checkInvariants(w: SoakWorld): Promise<Violation[]> {
  const v: Violation[] = [];
  const state = w.state();
  for (const d of state.datacenters) {
    const health = await w.with(d.name, (c) => c.checkHealth(3000)).catch((e: Error) => e.message);
    if (health !== "SERVING") v.push({ kind: "daemon-not-serving", detail: `${d.name}: ${health}` });
  }
  const { placements, groups, vms } = await w.catalog(async (c) => ({
    placements: await c.listPlacements(),
    groups: await c.listVmGroups(),
    vms: await c.listVms(),
  }));
  for (const p of placements) {
    if (p.state === "present") {
      const bad = verifyCopy(w.store(p.datacenter), p.digest);
      if (bad)
        v.push({
          kind: "placement-unverified",
          detail: `${p.digest.slice(0, 19)} in ${p.datacenter}: ${bad}`,
        });
    } else if (p.state === "transferring") {
      v.push({
        kind: "stuck-transfer",
        detail: `${p.digest.slice(0, 19)} into ${p.datacenter} still transferring (${p.bytesDone}/${p.bytesTotal}) after recovery`,
      });
    }
  }
  const procs = listProcesses();
  for (const d of state.datacenters) {
    const roots = instanceRoots(d.dataDir, procs);
    const known = new Set(vms.filter((x) => x.datacenter === d.name).map((x) => x.id));
    for (const [id, pids] of roots) {
      if (!known.has(id))
        v.push({
          kind: "orphan-process",
          detail: `${d.name}: pids ${pids.join(",")} of instance ${id}, unknown to the catalog`,
        });
      else if (pids.length > 1)
        v.push({
          kind: "duplicate-process",
          detail: `${d.name}: instance ${id} runs ${pids.length} times (pids ${pids.join(",")})`,
        });
    }
    for (const g of groups.filter((x) => x.datacenter === d.name)) {
      const mine = vms.filter((x) => x.requestId === g.requestId);
      const live = mine.filter((x) => (roots.get(x.id)?.length ?? 0) >= 1);
      const running = mine.filter((x) => x.state === "running");
      if (live.length === 0)
        v.push({ kind: "stuck-group", detail: `${d.name}: group ${g.requestId} has no live instance` });
      if (live.length !== g.count || running.length !== g.count)
        v.push({
          kind: "vm-count",
          detail: `${d.name}: group ${g.requestId} wants ${g.count}, ${live.length} live processes, ${running.length} running in the catalog, ${mine.length} VMs recorded`,
        });
    }
    for (const x of vms.filter((y) => y.datacenter === d.name && y.state === "running")) {
      if ((roots.get(x.id)?.length ?? 0) === 0)
        v.push({
          kind: "dead-running-vm",
          detail: `${d.name}: ${x.id} is "running" in the catalog with no process`,
        });
    }
  }
  if (pluginProcesses(w.dir, procs).length > 0)
    v.push({ kind: "leaked-plugin", detail: "plugin processes of the soak's stacks alive" });
  return v;
}

/** The fault of round `round`: a rotation over the kinds, so every kind comes up. */
export function faultOf(round: number, kinds: readonly FaultKind[]): FaultKind {
  return kinds[(round - 1) % kinds.length];
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Runs the soak; prints one line per round through opts.log, returns the summary. */
export async function runSoak(opts: SoakOptions): Promise<SoakSummary> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const timeoutMs = opts.recoveryTimeoutMs ?? 20_000;
  const kinds = (opts.faults ?? FAULTS).filter((k) => opts.catalog === "etcd" || k !== "etcd-member-kill");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-soak-"));
  const etcd = opts.catalog === "etcd" ? await startEtcdCluster() : undefined;
  const w = new SoakWorld(dir, opts, etcd);
  const results: RoundResult[] = [];
  try {
    await w.up();
    w.baseImage = await makeImage(dir, { name: "soak-base", sizeMiB: 4 });
    await w.retry("a-1", (c) =>
      c.uploadImage(fs.createReadStream(w.baseImage.file), { request_id: randomUUID(), name: "" }),
    );
    log(
      `soak: seed ${opts.seed}, catalog ${opts.catalog}, image ${opts.imageMiB} MiB at ${(opts.rateBytes / MiB).toFixed(0)} MiB/s, faults ${kinds.join(",")}, world ${w.worldDir}`,
    );
    const first = opts.firstRound ?? 1;
    for (let round = first; round < first + opts.rounds; round++) {
      const fault = faultOf(round, kinds);
      const r = rng(opts.seed * 1000 + round);
      let outcome: FaultOutcome;
      try {
        outcome =
          fault === "receiver-kill"
            ? await transferKill(w, r, "b-1", timeoutMs)
            : fault === "sender-kill"
              ? await transferKill(w, r, "a-1", timeoutMs)
              : fault === "supervisor-kill"
                ? await supervisorKill(w, r, timeoutMs)
                : fault === "concurrent-start"
                  ? await concurrentStart(w, r, timeoutMs)
                  : fault === "remove-during-transfer"
                    ? await removeDuringTransfer(w, r, timeoutMs)
                    : fault === "etcd-member-kill"
                      ? await etcdMemberKill(w, r, timeoutMs)
                      : await engineKill(w, r, round, timeoutMs);
      } catch (e) {
        outcome = {
          note: "",
          violations: [{ kind: "round-failed", detail: (e as Error).message.slice(0, 300) }],
          groups: [],
          digests: [],
        };
      }
      const bound = fault === "engine-kill" ? ENGINE_RECOVERY_S : timeoutMs / 1000;
      if (outcome.recoverySeconds !== undefined && outcome.recoverySeconds > bound)
        outcome.violations.push({
          kind: "slow-recovery",
          detail: `${outcome.recoverySeconds} s from the fault to VMs running (bound ${bound} s)`,
        });
      if (outcome.recoverySeconds === undefined)
        outcome.violations.push({
          kind: "not-recovered",
          detail: `VMs (or the transfer) not back within ${timeoutMs / 1000} s of the fault`,
        });
      // Recovery may have needed a daemon back: the operator's `gci world up` once more before checking.
      if (w.state().datacenters.some((d) => daemonGone(d) !== undefined))
        await w.operatorWorldUp().catch(() => undefined);
      outcome.violations.push(
        ...(await checkInvariants(w).catch((e: Error) => [{ kind: "check-failed", detail: e.message }])),
      );
      const result: RoundResult = {
        round,
        fault,
        recoverySeconds: outcome.recoverySeconds,
        note: outcome.note,
        violations: outcome.violations,
      };
      results.push(result);
      log(
        `round ${round} ${fault} recovery=${result.recoverySeconds ?? "none"}s violations=${result.violations.length}` +
          (result.violations.length
            ? ` [${result.violations.map((x) => `${x.kind}: ${x.detail}`).join(" | ")}]`
            : "") +
          ` (${result.note}; replay: --seed ${opts.seed} --first-round ${round} --rounds 1)`,
      );
      await w.cleanup(outcome.groups, outcome.digests);
    }
  } finally {
    await stopWorld(w.worldDir, 5000).catch(() => undefined);
    await etcd?.stop();
    if (opts.keep) log(`soak: kept ${dir} (world, daemon logs, stores)`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
  return summarize(opts, results);
}

function summarize(opts: SoakOptions, results: RoundResult[]): SoakSummary {
  const violationsByKind: Record<string, number> = {};
  for (const r of results)
    for (const v of r.violations) violationsByKind[v.kind] = (violationsByKind[v.kind] ?? 0) + 1;
  const recoverySeconds: SoakSummary["recoverySeconds"] = {};
  const unrecovered: Record<string, number> = {};
  for (const kind of new Set(results.map((r) => r.fault))) {
    const times = results
      .filter((r) => r.fault === kind && r.recoverySeconds !== undefined)
      .map((r) => r.recoverySeconds!)
      .sort((a, b) => a - b);
    const missing = results.filter((r) => r.fault === kind && r.recoverySeconds === undefined).length;
    if (missing > 0) unrecovered[kind] = missing;
    if (times.length > 0)
      recoverySeconds[kind] = {
        n: times.length,
        min: times[0],
        median: quantile(times, 0.5),
        p90: quantile(times, 0.9),
        max: times[times.length - 1],
      };
  }
  return {
    rounds: results.length,
    seed: opts.seed,
    catalog: opts.catalog,
    violations: results.reduce((n, r) => n + r.violations.length, 0),
    violationsByKind,
    recoverySeconds,
    unrecovered,
  };
}
