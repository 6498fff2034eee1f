import * as fs from "fs";
import * as os from "os";
import * as path from "path";

/** The Pulumi engine version built from its Go modules by scripts/setup.sh. */
export const ENGINE_VERSION = "3.274.1";

/** The root of this package (the folder holding its package.json). */
export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const manifest = path.join(dir, "package.json");
    if (fs.existsSync(manifest) && JSON.parse(fs.readFileSync(manifest, "utf8")).name === "pulumi-gci")
      return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`pulumi-gci: no package.json named pulumi-gci above ${__dirname}`);
    dir = parent;
  }
}

/** Where slow-to-build tools are cached, outside any checkout: $GCI_CACHE or ~/.cache/gci. */
export function cacheRoot(): string {
  return process.env.GCI_CACHE || path.join(os.homedir(), ".cache", "gci");
}

/** The folder holding the `pulumi` CLI built for ENGINE_VERSION. */
export function engineBinDir(): string {
  return path.join(cacheRoot(), `engine-v${ENGINE_VERSION}`, "bin");
}

/**
 * Where GCI keeps what outlives a run — the Pulumi file backend and PULUMI_HOME (`gci env`,
 * `gci stack`) and the local world (`gci world up`): $GCI_STATE, else $XDG_STATE_HOME/gci, else
 * ~/.local/state/gci (the XDG Base Directory rule for state).
 *
 * Per user, not per checkout or project folder: a platform stack and the app stacks that read its
 * outputs (StackReference) must share one backend wherever each project lives, and an installed
 * package's root is inside node_modules, which `npm ci` wipes.
 */
export function stateRoot(): string {
  if (process.env.GCI_STATE) return path.resolve(process.env.GCI_STATE);
  // The XDG rule: a relative $XDG_STATE_HOME is invalid and ignored.
  const xdg = process.env.XDG_STATE_HOME;
  const base = xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".local", "state");
  return path.join(base, "gci");
}
