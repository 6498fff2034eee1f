import { randomBytes } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Catalog, openCatalog } from "../../provider/catalog";
import { ClusterClient } from "../../provider/common/client";
import { extractImage, packDirectory } from "../../provider/image";
import { processImage } from "./guest";
import {
  DatacenterProcess,
  readWorld,
  restartDatacenter,
  startWorld,
  stopWorld,
  WorldSpec,
  WorldState,
} from "../../provider/world";

/**
 * A world of real cluster-manager processes for one test file, started from the compiled
 * daemon (npm run build) exactly as `gci world up` starts it. `stop()` kills them all.
 */
export interface TestWorld {
  readonly dir: string;
  state: WorldState;
  client(dc: string): ClusterClient;
  catalog(): Promise<Catalog>;
  /** The JSON log lines a datacenter's cluster manager has written so far. */
  logs(dc: string): LogLine[];
  dc(name: string): DatacenterProcess;
  /** kill -9 of a datacenter's cluster manager. */
  kill(dc: string): void;
  /**
   * Restarts a datacenter's cluster manager as `gci datacenter restart` does (same data folder,
   * same endpoint; a daemon still running is stopped with its instances kept), with extra
   * environment if given. `newPort` starts it on any free port instead.
   */
  restart(dc: string, env?: Readonly<Record<string, string>>, opts?: { newPort?: boolean }): Promise<void>;
  stop(): Promise<void>;
}

export interface LogLine {
  readonly event: string;
  readonly requestId?: string;
  readonly [key: string]: unknown;
}

// Worlds still running when the test process exits (a failed test) are killed with it.
const live = new Set<string>();
process.on("exit", () => {
  for (const dir of live) {
    for (const dc of readWorld(dir)?.datacenters ?? []) {
      try {
        process.kill(dc.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
});

export async function testWorld(spec: WorldSpec, extraArgs: string[] = []): Promise<TestWorld> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-world-"));
  live.add(dir);
  const clients: ClusterClient[] = [];
  const w: TestWorld = {
    dir,
    state: await startWorld(dir, spec, extraArgs),
    client(dc) {
      const c = new ClusterClient(w.dc(dc).endpoint);
      clients.push(c);
      return c;
    },
    catalog: () => openCatalog(w.state.catalog),
    logs(dc) {
      const file = w.dc(dc).logFile;
      return fs
        .readFileSync(file, "utf8")
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as LogLine);
    },
    dc(name) {
      const found = w.state.datacenters.find((d) => d.name === name);
      if (!found) throw new Error(`no datacenter ${name} in the test world`);
      return found;
    },
    kill(dc) {
      process.kill(w.dc(dc).pid, "SIGKILL");
    },
    async restart(dc, env, opts) {
      // Jest gives each test file a copy of process.env; a child sees only what is passed.
      await restartDatacenter(w.state, dc, {
        extraArgs,
        env: { ...process.env, ...env },
        newPort: opts?.newPort,
      });
    },
    async stop() {
      for (const c of clients) c.close();
      await stopWorld(dir, 3000);
      live.delete(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return w;
}

/**
 * A real, bootable test image of about `sizeMiB`: the process-web recipe's image (cheap to
 * run) plus random padding, so transfers span several chunks; names give distinct images.
 */
export async function makeImage(
  dir: string,
  opts: { name: string; sizeMiB: number },
): Promise<{ file: string; digest: string; sizeBytes: number }> {
  const root = fs.mkdtempSync(path.join(dir, "src-"));
  fs.rmdirSync(root);
  const info = await extractImage((await processImage()).file, root);
  fs.rmSync(path.join(root, "manifest.json"), { force: true });
  fs.writeFileSync(
    path.join(root, "padding.bin"),
    randomBytes(Math.max(1, opts.sizeMiB * 1024 * 1024 - info.sizeBytes)),
  );
  const file = path.join(dir, `${opts.name}.tar`);
  const result = await packDirectory(root, { ...info.manifest, name: opts.name }, file);
  fs.rmSync(root, { recursive: true, force: true });
  return { file, digest: result.digest, sizeBytes: result.sizeBytes };
}

/** Polls `fn` every 100 ms until it returns a truthy value or `timeoutMs` passes. */
export async function until<T>(
  fn: () => Promise<T> | T,
  timeoutMs: number,
  what: string,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
