import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { engineBinDir } from "../../provider/common/paths";

const execFileP = promisify(execFile);

/** The repository root (where bin/gci lives). */
export const REPO = path.resolve(__dirname, "..", "..");

/** A throwaway Pulumi project folder whose node_modules is the repository's. */
export interface TempProject {
  readonly dir: string;
  readonly stateDir: string;
  /** Runs `gci stack <args...> --dir <dir> --state <stateDir>`; returns stdout, stderr and the exit code. */
  gci(args: string[], opts?: { timeoutMs?: number }): Promise<GciRun>;
  remove(): void;
}

export interface GciRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Creates a Pulumi project (Pulumi.yaml with runtime nodejs, and the given index.ts) in a temp folder. */
export function tempProject(name: string, program: string): TempProject {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `gci-${name}-`));
  const stateDir = path.join(dir, ".state");
  fs.writeFileSync(path.join(dir, "Pulumi.yaml"), `name: ${name}\nruntime: nodejs\n`);
  fs.writeFileSync(path.join(dir, "index.ts"), program);
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "node_modules"));
  return {
    dir,
    stateDir,
    gci: (args, opts) => runGci([...args, "--dir", dir, "--state", stateDir], opts?.timeoutMs),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Runs bin/gci with the given arguments and environment (default: this process's); never
 * throws on a non-zero exit. The environment is passed explicitly because jest's
 * process.env is a copy that child processes do not see.
 */
export async function runGci(args: string[], timeoutMs = 300_000, env = { ...process.env }): Promise<GciRun> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [path.join(REPO, "bin", "gci"), ...args], {
      cwd: REPO,
      env,
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof err.code === "number" ? err.code : 1,
      stdout: err.stdout ?? "",
      stderr: err.stderr ?? "",
    };
  }
}

/** The `pulumi` CLI built by scripts/setup.sh, and the version it reports. */
export async function engineVersion(): Promise<{ path: string; version: string }> {
  const bin = path.join(engineBinDir(), "pulumi");
  const { stdout } = await execFileP(bin, ["version"]);
  return { path: bin, version: stdout.trim() };
}
