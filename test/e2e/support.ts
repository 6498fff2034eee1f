import { execFile, spawn } from "child_process";
import { randomBytes } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { engineEnv } from "../../provider/pulumi/engine/env";
import { engineBinDir } from "../../provider/common/paths";
import { Manifest, packDirectory } from "../../provider/image";
import { GciRun, REPO, runGci } from "../support/engine";
import type { TestWorld } from "../support/world";

const execFileP = promisify(execFile);

/** A project folder (an example, or a temp one) and a stack of it, with state in `stateDir`. */
export interface StackRunner {
  readonly dir: string;
  readonly stack: string;
  readonly stateDir: string;
  /** `gci stack <op> --json` with `-c key=value` for each config entry. */
  run(op: string, config?: Record<string, string | number>, timeoutMs?: number): Promise<GciRun>;
  /** The same, started detached (its own process group) so a test can kill it. */
  start(op: string, config?: Record<string, string | number>): { pid: number; done: Promise<number> };
  /** Removes the lock a killed update left, with the real `pulumi cancel`. */
  cancel(): Promise<void>;
  /** Deletes the Pulumi.<stack>.yaml this runner wrote into the project folder. */
  cleanup(): void;
}

export function stackRunner(dir: string, stack: string, stateDir: string): StackRunner {
  // GCI_STATE too, so what the SDK packs (gci.Image from a directory) stays in the test's folder.
  const env = { ...process.env, GCI_STATE: stateDir };
  const args = (op: string, config: Record<string, string | number>) => [
    "stack",
    op,
    "--dir",
    dir,
    "--stack",
    stack,
    "--state",
    stateDir,
    "--json",
    ...Object.entries(config).flatMap(([k, v]) => ["-c", `${k}=${v}`]),
  ];
  return {
    dir,
    stack,
    stateDir,
    run: (op, config = {}, timeoutMs = 240_000) => runGci(args(op, config), timeoutMs, env),
    start(op, config = {}) {
      const child = spawn(process.execPath, [path.join(REPO, "bin", "gci"), ...args(op, config)], {
        cwd: REPO,
        env,
        detached: true,
        stdio: "ignore",
      });
      const done = new Promise<number>((resolve) => child.on("exit", (code) => resolve(code ?? -1)));
      return { pid: child.pid!, done };
    },
    async cancel() {
      await execFileP(
        path.join(engineBinDir(), "pulumi"),
        ["cancel", "--yes", "--stack", stack, "--cwd", dir],
        {
          env: { ...process.env, ...engineEnv({ stateDir }) },
        },
      );
    },
    cleanup: () => fs.rmSync(path.join(dir, `Pulumi.${stack}.yaml`), { force: true }),
  };
}

/**
 * The real `pulumi` CLI in a project folder, as a user runs it after `eval "$(gci env)"`: the
 * offline engine environment with its state in `stateDir`, plus `env`. Rejects on a non-zero exit.
 */
export function pulumiCli(dir: string, stateDir: string, env: NodeJS.ProcessEnv = {}) {
  const full = { ...process.env, ...engineEnv({ stateDir }), ...env };
  return (...args: string[]) =>
    execFileP("pulumi", [...args, "--non-interactive"], { cwd: dir, env: full, maxBuffer: 16 << 20 });
}

/** SIGKILL of a process and every descendant (the pulumi CLI, and the dynamic-provider plugin it started). */
export function killTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // Gone while we looked.
    }
  }
  const tree: number[] = [];
  const walk = (p: number) => {
    tree.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  for (const p of tree) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  return tree;
}

/** What a world holds: placements, VM groups and VMs in the catalog, and each cluster manager's VMs. */
export async function worldSnapshot(world: TestWorld) {
  const catalog = await world.catalog();
  try {
    const images = (await catalog.listImages()).map((i) => i.digest).sort();
    const placements = (await catalog.listPlacements())
      .map((p) => `${p.digest}@${p.datacenter}:${p.state}`)
      .sort();
    const groups = (await catalog.listVmGroups())
      .map((g) => `${g.requestId}@${g.datacenter}x${g.count}`)
      .sort();
    const vms = (await catalog.listVms()).map((v) => `${v.id}@${v.datacenter}:${v.state}`).sort();
    const daemonVms: string[] = [];
    for (const dc of world.state.datacenters) {
      for (const vm of await world.client(dc.name).listVms())
        daemonVms.push(`${vm.id}@${dc.name}:${vm.state}`);
    }
    return { images, placements, groups, vms, daemonVms: daemonVms.sort() };
  } finally {
    await catalog.close();
  }
}

/**
 * A process-driver image like examples/images/process-web, with `extra` bytes of random
 * padding so tests get distinct images (another digest) and slow transfers (more bytes).
 */
export async function processVariant(
  dir: string,
  name: string,
  paddingBytes = 0,
): Promise<{ file: string; stage: string }> {
  const recipe = path.join(REPO, "examples", "images", "process-web");
  const stage = path.join(dir, `${name}-root`);
  await execFileP("bash", [path.join(recipe, "build.sh"), "--stage", stage]);
  fs.writeFileSync(path.join(stage, "www", "variant.txt"), `${name}\n`);
  if (paddingBytes > 0) fs.writeFileSync(path.join(stage, "padding.bin"), randomBytes(paddingBytes));
  const manifest = JSON.parse(fs.readFileSync(path.join(recipe, "manifest.json"), "utf8")) as Manifest;
  const file = path.join(dir, `${name}.tar`);
  await packDirectory(stage, { ...manifest, name }, file);
  return { file, stage };
}

/** GETs a URL with a deadline; the body, or throws. */
export async function httpGet(url: string, timeoutMs = 10_000): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.text();
}

/** A fresh temp folder for a test file's state and images. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `gci-${prefix}-`));
}

/** The parsed --json summary of a run, failing with the run's stderr when it did not succeed. */
export function summaryOf<T = Record<string, unknown>>(run: GciRun): T {
  if (run.code !== 0) throw new Error(`gci stack failed (exit ${run.code}):\n${run.stderr.slice(-6000)}`);
  return JSON.parse(run.stdout.trim().split("\n").pop()!) as T;
}
