import { spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { openCatalog } from "../catalog";
import { checkName } from "../catalog/validate";
import { ClusterClient } from "../common/client";
import { packageRoot, stateRoot } from "../common/paths";
import { invalid, notFound, precondition, unavailable } from "../common/errors";
import { isSameProcess, procStat } from "../common/proc";

/** The shape of a world: regions and their datacenters. */
export interface WorldSpec {
  /** Region name -> its datacenters' names. */
  readonly regions: Readonly<Record<string, readonly string[]>>;
  /**
   * Catalog location; a SQLite file in the world folder unless set.
   * @default "sqlite:<dir>/catalog.db"
   */
  readonly catalog?: string;
  /**
   * vCPUs each datacenter can run at once.
   * @default 16
   */
  readonly vcpus?: number;
  /**
   * Memory each datacenter can run at once, MiB.
   * @default 32768
   */
  readonly memoryMiB?: number;
}

/** One running datacenter of a world, as recorded in <dir>/world.json. */
export interface DatacenterProcess {
  readonly name: string;
  readonly region: string;
  readonly endpoint: string;
  readonly pid: number;
  /**
   * The process's start time (/proc/<pid>/stat field 22), so a pid reused by another program
   * after a reboot or crash is never taken for the daemon. Missing in files of older GCIs.
   */
  readonly startTime?: string;
  readonly dataDir: string;
  readonly logFile: string;
}

/** What <dir>/world.json records. */
export interface WorldState {
  readonly dir: string;
  readonly catalog: string;
  readonly spec: WorldSpec;
  /** Extra cluster-manager flags the world was started with (e.g. --max-transfer-rate); restarts use them too. */
  readonly args?: string[];
  readonly datacenters: DatacenterProcess[];
}

/** The default world: three regions, four datacenters. */
export const DEFAULT_SPEC: WorldSpec = { regions: { us: ["us-1", "us-2"], eu: ["eu-1"], ap: ["ap-1"] } };

const READY_TIMEOUT_MS = 30_000;

/** Parses `--region us:2` style flags ("us:2" -> us-1, us-2; "eu" -> eu-1). */
export function specFromFlags(flags: readonly string[]): WorldSpec {
  const regions: Record<string, string[]> = {};
  for (const flag of flags) {
    const m = /^([A-Za-z0-9-]+)(?::(\d+))?$/.exec(flag);
    if (!m || Number(m[2] ?? 1) < 1 || Number(m[2] ?? 1) > 32) {
      throw invalid(
        `--region "${flag}" is not <name>[:<datacenters>]: write it like "us:2" (1 to 32 datacenters)`,
      );
    }
    regions[m[1]] = Array.from({ length: Number(m[2] ?? 1) }, (_, i) => `${m[1]}-${i + 1}`);
  }
  return { regions };
}

/** Reads and checks a world config file (JSON: { "regions": { "us": ["us-1"] }, ... }). */
export function readSpec(file: string): WorldSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw invalid(
      `world config "${file}" is not readable JSON (${(e as Error).message}): see README.md for its shape`,
    );
  }
  return checkSpec(raw, file);
}

function checkSpec(raw: unknown, where: string): WorldSpec {
  const spec = raw as WorldSpec;
  if (!spec || typeof spec.regions !== "object" || Object.keys(spec.regions).length === 0) {
    throw invalid(`${where}: "regions" must map region names to datacenter names, e.g. {"us": ["us-1"]}`);
  }
  const seen = new Set<string>();
  for (const [region, dcs] of Object.entries(spec.regions)) {
    checkName("region", region);
    if (!Array.isArray(dcs) || dcs.length === 0)
      throw invalid(`${where}: region "${region}" needs a list of datacenter names`);
    for (const dc of dcs) {
      checkName("datacenter", dc);
      if (seen.has(dc))
        throw invalid(`${where}: datacenter "${dc}" appears twice: names are unique in a world`);
      seen.add(dc);
    }
  }
  return spec;
}

/** The compiled cluster-manager entry point (tests run this module from source, the daemon always from dist/). */
function daemonMain(): string {
  return path.join(packageRoot(), "dist", "provider", "cluster", "main.js");
}

function stateFile(dir: string): string {
  return path.join(dir, "world.json");
}

/** A world folder: `dir` if given, else $GCI_WORLD, else <state>/world. */
export function worldDir(dir?: string): string {
  return path.resolve(dir ?? process.env.GCI_WORLD ?? path.join(stateRoot(), "world"));
}

/** The running world in that folder, or a clear error saying how to start one. */
export function requireWorld(dir: string): WorldState {
  const state = readWorld(dir);
  if (!state) throw precondition(`no world runs in "${dir}": start one with \`gci world up --world ${dir}\``);
  return state;
}

/** Reads <dir>/world.json, or undefined when no world was started there. */
export function readWorld(dir: string): WorldState | undefined {
  const file = stateFile(dir);
  if (!fs.existsSync(file)) return undefined;
  let state: unknown;
  try {
    state = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw precondition(
      `${file} is not JSON (${(e as Error).message}): stop its cluster managers by hand, then remove it`,
    );
  }
  const problem = worldProblem(state);
  if (problem !== undefined) {
    throw precondition(
      `${file} is not a world's record: ${problem}; stop its cluster managers by hand, then remove it`,
    );
  }
  return state as WorldState;
}

/** What is wrong with a parsed world.json, if anything: its pids are signalled, so each is checked. */
function worldProblem(value: unknown): string | undefined {
  const state = value as WorldState;
  if (typeof state !== "object" || state === null || !Array.isArray(state.datacenters)) {
    return `"datacenters" is not a list`;
  }
  for (const dc of state.datacenters as unknown[]) {
    const d = dc as Partial<DatacenterProcess>;
    if (typeof d !== "object" || d === null || typeof d.name !== "string") return `a datacenter has no name`;
    // pid 0 or -1 would signal a whole process group, or every process.
    if (!Number.isSafeInteger(d.pid) || (d.pid as number) < 1)
      return `pid ${JSON.stringify(d.pid)} of ${d.name} is not a process id`;
    if (d.startTime !== undefined && !/^[0-9]+$/.test(String(d.startTime)))
      return `startTime ${JSON.stringify(d.startTime)} of ${d.name} is not a start time`;
  }
  return undefined;
}

function writeWorld(state: WorldState): void {
  const file = stateFile(state.dir);
  fs.writeFileSync(file + ".tmp", JSON.stringify(state, null, 2));
  fs.renameSync(file + ".tmp", file);
}

/** True while `pid` runs: a zombie (killed, not yet reaped by its parent) has exited. */
export function isAlive(pid: number): boolean {
  const stat = procStat(pid);
  if (stat !== undefined) return stat.state !== "Z" && stat.state !== "X";
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Why the process world.json names for `dc` is not its cluster manager any more, or undefined
 * while it is: the same start time, or (a world.json of an older GCI, without one) a command
 * line that runs this daemon for that datacenter. Only then is it signalled.
 */
export function daemonGone(dc: DatacenterProcess): string | undefined {
  const stat = procStat(dc.pid);
  if (stat === undefined || stat.state === "Z" || stat.state === "X") return "it has exited";
  if (dc.startTime !== undefined) {
    return isSameProcess(dc.pid, dc.startTime)
      ? undefined
      : `pid ${dc.pid} now belongs to another process (it started at another time), not signalled`;
  }
  return runsDaemonFor(dc.pid, dc.name)
    ? undefined
    : `pid ${dc.pid} now belongs to another program, not signalled`;
}

/** True when `pid`'s command line is this cluster manager's, for `datacenter`. */
function runsDaemonFor(pid: number, datacenter: string): boolean {
  let args: string[];
  try {
    args = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return false;
  }
  const flag = args.indexOf("--datacenter");
  return args.includes(daemonMain()) && flag >= 0 && args[flag + 1] === datacenter;
}

const isDaemon = (dc: DatacenterProcess): boolean => daemonGone(dc) === undefined;

/** What `gci world up` did to one datacenter. */
export type UpAction = "started" | "kept" | "restarted";

/** What upWorld did: the world as recorded now, each datacenter's action, and those that failed. */
export interface UpReport {
  readonly state: WorldState;
  readonly actions: { readonly name: string; readonly action: UpAction; readonly detail?: string }[];
  readonly failures: { readonly name: string; readonly error: Error }[];
}

/**
 * Starts a world, or heals the one recorded in `dir`: one cluster-manager process per
 * datacenter, one catalog, logs and data under `dir`. A fresh world is all or nothing. In a
 * recorded world each datacenter that serves is kept as it is (same process, its instances
 * untouched); one that is down, or hung, is started again on the port it had, so its endpoint
 * does not change. `spec` (undefined: the recorded one, else DEFAULT_SPEC) must match a
 * recorded world: a world is reshaped by `gci world down`, then `up`.
 */
export async function upWorld(dir: string, spec?: WorldSpec, extraArgs: string[] = []): Promise<UpReport> {
  dir = path.resolve(dir);
  if (spec !== undefined) checkSpec(spec, "world spec");
  const running = readWorld(dir);
  if (running) return healWorld(running, spec, extraArgs);
  const state = await startFresh(dir, spec ?? DEFAULT_SPEC, extraArgs);
  return {
    state,
    actions: state.datacenters.map((d) => ({ name: d.name, action: "started" as const })),
    failures: [],
  };
}

/** upWorld, throwing the first datacenter's failure; returns the world as recorded. */
export async function startWorld(
  dir: string,
  spec?: WorldSpec,
  extraArgs: string[] = [],
): Promise<WorldState> {
  const report = await upWorld(dir, spec, extraArgs);
  if (report.failures.length > 0) throw report.failures[0].error;
  return report.state;
}

/** Starts every datacenter of a world that has no record yet, on free 127.0.0.1 ports. */
async function startFresh(dir: string, spec: WorldSpec, extraArgs: string[]): Promise<WorldState> {
  fs.mkdirSync(dir, { recursive: true });
  const catalog = spec.catalog ?? `sqlite:${path.join(dir, "catalog.db")}`;
  const state: WorldState = { dir, catalog, spec, args: extraArgs, datacenters: [] };
  // Open the catalog once first, so its file and schema exist before the daemons race to open it.
  await (await openCatalog(catalog)).close();
  const all = Object.entries(spec.regions).flatMap(([region, dcs]) => dcs.map((name) => ({ name, region })));
  const started = await Promise.allSettled(
    all.map((dc) => startDatacenter(state, dc.name, dc.region, extraArgs)),
  );
  const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    // One datacenter did not start: stop the ones that did, so a failed `up` leaves nothing running.
    for (const r of started) if (r.status === "fulfilled") killQuietly(r.value.pid);
    throw failed.reason;
  }
  state.datacenters.push(...started.map((r) => (r as PromiseFulfilledResult<DatacenterProcess>).value));
  writeWorld(state);
  return state;
}

/** Restarts the datacenters of a recorded world that are down or hung; the others are left alone. */
async function healWorld(
  state: WorldState,
  spec: WorldSpec | undefined,
  extraArgs: string[],
): Promise<UpReport> {
  const problem = specChange(state, spec, extraArgs);
  if (problem !== undefined) {
    throw precondition(
      `the world in "${state.dir}" runs ${problem}; \`gci world up\` only restarts what is down. ` +
        `To change a world, stop it with \`gci world down --world ${state.dir}\`, then start it with the new shape`,
    );
  }
  const args = state.args ?? extraArgs;
  const report: UpReport = { state, actions: [], failures: [] };
  await Promise.all(
    state.datacenters.map(async (dc) => {
      try {
        const liveness = await daemonLiveness(dc);
        if (liveness.state === "serving") {
          report.actions.push({ name: dc.name, action: "kept" });
          return;
        }
        if (liveness.state === "hung") await killAndWait(dc);
        await restartOnEndpoint(state, dc, args);
        report.actions.push({ name: dc.name, action: "restarted", detail: liveness.reason });
      } catch (e) {
        report.failures.push({ name: dc.name, error: e as Error });
      }
    }),
  );
  const order = (name: string) => state.datacenters.findIndex((d) => d.name === name);
  report.actions.sort((a, b) => order(a.name) - order(b.name));
  report.failures.sort((a, b) => order(a.name) - order(b.name));
  return report;
}

/** How a spec asked for differs from the recorded world, said as "<recorded>, not <asked>". */
function specChange(state: WorldState, spec: WorldSpec | undefined, extraArgs: string[]): string | undefined {
  if (spec !== undefined) {
    const shape = (s: WorldSpec) =>
      Object.entries(s.regions)
        .map(([r, dcs]) => `${r}: ${dcs.join(", ")}`)
        .join("; ");
    if (shape(spec) !== shape(state.spec)) return `regions ${shape(state.spec)}, not ${shape(spec)}`;
    if (spec.catalog !== undefined && spec.catalog !== state.catalog)
      return `catalog ${state.catalog}, not ${spec.catalog}`;
    if (spec.vcpus !== state.spec.vcpus || spec.memoryMiB !== state.spec.memoryMiB)
      return `capacity ${state.spec.vcpus ?? 16} vCPUs/${state.spec.memoryMiB ?? 32768} MiB, not ${spec.vcpus ?? 16}/${spec.memoryMiB ?? 32768}`;
  }
  const recorded = state.args ?? [];
  if (extraArgs.length > 0 && extraArgs.join(" ") !== recorded.join(" "))
    return `with daemon flags "${recorded.join(" ")}", not "${extraArgs.join(" ")}"`;
  return undefined;
}

/** How long a live daemon has to answer a health check before it counts as hung. */
const HEALTH_DEADLINE_MS = 5000;

/**
 * Whether a datacenter's recorded daemon serves: "down" when its process is gone (exited, a
 * zombie, or its pid is another program's now), "hung" when it lives but does not answer
 * SERVING within HEALTH_DEADLINE_MS.
 */
export async function daemonLiveness(
  dc: DatacenterProcess,
): Promise<{ readonly state: "serving" | "down" | "hung"; readonly reason?: string }> {
  const gone = daemonGone(dc);
  if (gone !== undefined) return { state: "down", reason: `pid ${dc.pid}: ${gone}` };
  const client = new ClusterClient(dc.endpoint);
  try {
    const health = await client.checkHealth(HEALTH_DEADLINE_MS);
    if (health === "SERVING") return { state: "serving" };
    return { state: "hung", reason: `pid ${dc.pid} answers ${health}` };
  } catch (e) {
    // The process may be a kill -9 that has not finished exiting: it counts as down then.
    if (daemonGone(dc) !== undefined) return { state: "down", reason: `pid ${dc.pid} has exited` };
    return { state: "hung", reason: `pid ${dc.pid} does not answer: ${(e as Error).message}` };
  } finally {
    client.close();
  }
}

/** SIGKILL of a recorded daemon that is still that daemon, and a wait until it is gone. */
async function killAndWait(dc: DatacenterProcess, timeoutMs = 10_000): Promise<void> {
  if (isDaemon(dc)) killQuietly(dc.pid, "SIGKILL");
  await waitUntilGone(dc, timeoutMs);
  if (isDaemon(dc)) {
    throw unavailable(
      `cluster manager of ${dc.name} (pid ${dc.pid}) still runs ${timeoutMs / 1000} s after SIGKILL: ` +
        `it is stuck in the kernel; see \`cat /proc/${dc.pid}/stack\`, then run \`gci world up\` again`,
    );
  }
}

async function waitUntilGone(dc: DatacenterProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isDaemon(dc) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/** The host and port of an endpoint "host:port". */
function hostPort(dc: DatacenterProcess): { host: string; port: number } {
  const at = dc.endpoint.lastIndexOf(":");
  const port = Number(dc.endpoint.slice(at + 1));
  if (at < 0 || !Number.isSafeInteger(port) || port < 1 || port > 65535) {
    throw precondition(
      `${dc.name}'s recorded endpoint "${dc.endpoint}" has no port: fix it in world.json, or run \`gci world down\` then \`up\``,
    );
  }
  return { host: dc.endpoint.slice(0, at), port };
}

/** How long a recorded port may stay taken (a daemon just killed, still exiting) before that is an error. */
const PORT_WAIT_MS = 3000;

/** Resolves once `port` can be listened on; a clear error naming the datacenter when it cannot. */
async function checkPortFree(dc: DatacenterProcess, host: string, port: number): Promise<void> {
  const deadline = Date.now() + PORT_WAIT_MS;
  for (;;) {
    const code = await tryListen(host, port);
    if (code === undefined) return;
    if (code !== "EADDRINUSE" || Date.now() > deadline) {
      const why = code === "EADDRINUSE" ? "is taken by another program" : `cannot be listened on (${code})`;
      throw precondition(
        `datacenter ${dc.name} restarts on its endpoint ${host}:${port}, but port ${port} ${why}: ` +
          `stop that program (see \`ss -ltnp 'sport = :${port}'\`) and run \`gci world up\` again, ` +
          `or restart the whole world on new ports with \`gci world down\` then \`up\``,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Listens on host:port and closes at once; the error code if that failed. */
function tryListen(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? String(e)));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}

/**
 * Starts a datacenter whose daemon is gone again, on the port it had (or, with `newPort`,
 * any free one); world.json gets the new process only once it serves.
 */
export async function restartOnEndpoint(
  state: WorldState,
  dc: DatacenterProcess,
  extraArgs: string[] = state.args ?? [],
  env: NodeJS.ProcessEnv = process.env,
  newPort = false,
): Promise<DatacenterProcess> {
  let port: string[] = [];
  if (!newPort) {
    const { host, port: n } = hostPort(dc);
    await checkPortFree(dc, host, n);
    port = ["--host", host, "--port", String(n)];
  }
  return startDatacenter(state, dc.name, dc.region, [...port, ...extraArgs], env);
}

/** What restartDatacenter did. */
export interface RestartReport {
  readonly before: DatacenterProcess;
  readonly after: DatacenterProcess;
  /** How the old daemon ended: "stopped" (SIGUSR2), "killed" (SIGKILL after the grace), "gone" (it was not running). */
  readonly old: "stopped" | "killed" | "gone";
}

/**
 * Restarts one datacenter's cluster manager on the same endpoint, leaving its VMs and process
 * instances running: the old daemon gets SIGUSR2 ("stop serving, keep instances"), SIGKILL
 * after `graceMs`, and the new one adopts the instances. Other datacenters are not touched.
 */
export async function restartDatacenter(
  state: WorldState,
  name: string,
  opts: { graceMs?: number; extraArgs?: string[]; env?: NodeJS.ProcessEnv; newPort?: boolean } = {},
): Promise<RestartReport> {
  const before = state.datacenters.find((d) => d.name === name);
  if (!before) {
    throw notFound(
      `datacenter "${name}" is not in the world in "${state.dir}": its datacenters are ${state.datacenters.map((d) => d.name).join(", ")}`,
    );
  }
  let old: RestartReport["old"] = "gone";
  if (isDaemon(before)) {
    killQuietly(before.pid, "SIGUSR2");
    await waitUntilGone(before, opts.graceMs ?? 15_000);
    old = "stopped";
    if (isDaemon(before)) {
      old = "killed";
      await killAndWait(before);
    }
  }
  const after = await restartOnEndpoint(state, before, opts.extraArgs, opts.env, opts.newPort);
  return { before, after, old };
}

/**
 * Starts (or restarts) one datacenter's cluster manager of a world and waits until it
 * serves. Its data folder is kept across restarts, so the store and VMs survive.
 */
export async function startDatacenter(
  state: WorldState,
  name: string,
  region: string,
  extraArgs: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Promise<DatacenterProcess> {
  const base = path.join(state.dir, "dcs", name);
  const dataDir = path.join(base, "data");
  const logFile = path.join(base, "log.jsonl");
  const readyFile = path.join(base, "ready.json");
  try {
    fs.mkdirSync(dataDir, { recursive: true });
  } catch (e) {
    throw precondition(`datacenter ${name} cannot have its data folder ${dataDir}: ${(e as Error).message}`);
  }
  fs.rmSync(readyFile, { force: true });
  const log = fs.openSync(logFile, "a");
  const args = [
    daemonMain(),
    ...[
      "--datacenter",
      name,
      "--region",
      region,
      "--data",
      dataDir,
      "--catalog",
      state.catalog,
      "--ready-file",
      readyFile,
    ],
    ...(state.spec.vcpus
      ? ["--vcpus", String(state.spec.vcpus), "--memory-mib", String(state.spec.memoryMiB ?? 32768)]
      : []),
    ...extraArgs,
  ];
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", log, log], env });
  child.unref();
  fs.closeSync(log);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!fs.existsSync(readyFile)) {
    if (child.exitCode !== null || !isAlive(child.pid!)) {
      throw precondition(`cluster manager of ${name} exited during start-up: see ${logFile}`);
    }
    if (Date.now() > deadline) {
      killQuietly(child.pid!);
      throw precondition(
        `cluster manager of ${name} did not start within ${READY_TIMEOUT_MS / 1000} s: see ${logFile}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const ready = JSON.parse(fs.readFileSync(readyFile, "utf8")) as { endpoint: string; pid: number };
  const startTime = procStat(ready.pid)?.startTime;
  if (startTime === undefined)
    throw precondition(`cluster manager of ${name} exited during start-up: see ${logFile}`);
  const dc = { name, region, endpoint: ready.endpoint, pid: ready.pid, startTime, dataDir, logFile };
  const current = state.datacenters.findIndex((d) => d.name === name);
  if (current >= 0) {
    state.datacenters[current] = dc;
    writeWorld(state);
  }
  return dc;
}

/** What stopWorld did: the datacenters it stopped, and those whose process was already gone. */
export interface StopReport {
  readonly stopped: string[];
  readonly gone: { readonly name: string; readonly pid: number; readonly reason: string }[];
}

/**
 * Stops every cluster manager of the world and their instances (SIGTERM, then SIGKILL after
 * `graceMs`). Only a process that is still the recorded daemon (daemonGone) is signalled.
 */
export async function stopWorldReport(dir: string, graceMs = 30_000): Promise<StopReport> {
  const state = readWorld(path.resolve(dir));
  if (!state) return { stopped: [], gone: [] };
  const report: StopReport = { stopped: [], gone: [] };
  const live: DatacenterProcess[] = [];
  for (const dc of state.datacenters) {
    const reason = daemonGone(dc);
    if (reason === undefined) live.push(dc);
    else report.gone.push({ name: dc.name, pid: dc.pid, reason });
  }
  for (const dc of live) killQuietly(dc.pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (live.some(isDaemon) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const dc of live.filter(isDaemon)) killQuietly(dc.pid, "SIGKILL");
  fs.rmSync(stateFile(state.dir), { force: true });
  report.stopped.push(...live.map((d) => d.name));
  return report;
}

/** stopWorldReport, counting the cluster managers it stopped. */
export async function stopWorld(dir: string, graceMs = 30_000): Promise<number> {
  return (await stopWorldReport(dir, graceMs)).stopped.length;
}

function killQuietly(pid: number, signal: NodeJS.Signals = "SIGKILL"): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** One row of `gci world status`. */
export interface DatacenterStatus {
  readonly name: string;
  readonly region: string;
  readonly endpoint: string;
  readonly pid: number;
  readonly health: string;
  readonly images: number;
  readonly transfers: number;
}

/** Health (from the gRPC health service), images and transfers of each datacenter. */
export async function worldStatus(dir: string): Promise<DatacenterStatus[]> {
  const state = requireWorld(path.resolve(dir));
  const catalog = await openCatalog(state.catalog);
  try {
    const placements = await catalog.listPlacements();
    return await Promise.all(
      state.datacenters.map(async (dc) => {
        const client = new ClusterClient(dc.endpoint);
        // DOWN: its process is gone (a zombie too); UNREACHABLE: it lives but does not answer.
        const health = isDaemon(dc) ? await client.checkHealth(2000).catch(() => "UNREACHABLE") : "DOWN";
        client.close();
        const mine = placements.filter((p) => p.datacenter === dc.name);
        return {
          name: dc.name,
          region: dc.region,
          endpoint: dc.endpoint,
          pid: dc.pid,
          health,
          images: mine.filter((p) => p.state === "present").length,
          transfers: mine.filter((p) => p.state === "transferring").length,
        };
      }),
    );
  } finally {
    await catalog.close();
  }
}
