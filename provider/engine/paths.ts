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

/** The project-local state folder: $GCI_STATE or <package root>/.gci. */
export function stateRoot(): string {
  return process.env.GCI_STATE || path.join(packageRoot(), ".gci");
}
