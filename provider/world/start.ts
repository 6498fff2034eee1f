/**
 * Starting cluster managers of a world: a whole fresh world (all or nothing), one datacenter,
 * and one datacenter again on the endpoint it had.
 */

import { type ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { openCatalog } from "../catalog";
import { precondition } from "../common/errors";
import { procStat } from "../common/proc";
import { isAlive, killQuietly } from "./liveness";
import { type DatacenterProcess, type WorldState, daemonMain, writeWorld } from "./record";
import type { WorldSpec } from "./spec";

/** How long a cluster manager has to write its ready file before its start counts as failed. */
const READY_TIMEOUT_MS = 30_000;

/** Starts every datacenter of a world that has no record yet, on free 127.0.0.1 ports. */
export async function startFresh(dir: string, spec: WorldSpec, extraArgs: string[]): Promise<WorldState> {
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

/** Where one datacenter of a world keeps its data, log and ready file, under <dir>/dcs/<name>. */
interface DatacenterFiles {
  readonly dataDir: string;
  readonly logFile: string;
  readonly readyFile: string;
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
  const files: DatacenterFiles = {
    dataDir: path.join(base, "data"),
    logFile: path.join(base, "log.jsonl"),
    readyFile: path.join(base, "ready.json"),
  };
  const { dataDir, logFile, readyFile } = files;
  try {
    fs.mkdirSync(dataDir, { recursive: true });
  } catch (e) {
    throw precondition(`datacenter ${name} cannot have its data folder ${dataDir}: ${(e as Error).message}`);
  }
  fs.rmSync(readyFile, { force: true });
  const log = fs.openSync(logFile, "a");
  const args = daemonArgs(state, name, region, files, extraArgs);
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", log, log], env });
  child.unref();
  fs.closeSync(log);
  const ready = await waitReady(child, name, files);
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

/** The cluster manager's command line for one datacenter of the world. */
function daemonArgs(
  state: WorldState,
  name: string,
  region: string,
  files: DatacenterFiles,
  extraArgs: string[],
): string[] {
  return [
    daemonMain(),
    ...[
      "--datacenter",
      name,
      "--region",
      region,
      "--data",
      files.dataDir,
      "--catalog",
      state.catalog,
      "--ready-file",
      files.readyFile,
    ],
    ...(state.spec.vcpus
      ? ["--vcpus", String(state.spec.vcpus), "--memory-mib", String(state.spec.memoryMiB ?? 32768)]
      : []),
    ...extraArgs,
  ];
}

/**
 * What the daemon wrote to its ready file once it serves; a clear error if it exits first or
 * does not get there within READY_TIMEOUT_MS (then it is killed).
 */
async function waitReady(
  child: ChildProcess,
  name: string,
  files: DatacenterFiles,
): Promise<{ endpoint: string; pid: number }> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!fs.existsSync(files.readyFile)) {
    if (child.exitCode !== null || !isAlive(child.pid!)) {
      throw precondition(`cluster manager of ${name} exited during start-up: see ${files.logFile}`);
    }
    if (Date.now() > deadline) {
      killQuietly(child.pid!);
      throw precondition(
        `cluster manager of ${name} did not start within ${READY_TIMEOUT_MS / 1000} s: see ${files.logFile}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return JSON.parse(fs.readFileSync(files.readyFile, "utf8")) as { endpoint: string; pid: number };
}
