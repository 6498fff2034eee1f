import * as fs from "fs";
import * as path from "path";
import { invalid } from "../../common/errors";

/** The entry point of a Pulumi project folder: index.ts, else index.js. */
export function programEntry(projectDir: string): string {
  for (const name of ["index.ts", "index.js"]) {
    const file = path.join(projectDir, name);
    if (fs.existsSync(file)) return file;
  }
  throw invalid(`no index.ts or index.js in "${projectDir}": a GCI program's entry point is index.ts`);
}

/**
 * Runs the program's module body inside the engine's context; its exports become the stack
 * outputs, as with `pulumi up` in a project folder. A fresh require each time, so preview
 * and up in one process both run the program.
 */
export async function loadProgram(entry: string): Promise<Record<string, unknown>> {
  if (entry.endsWith(".ts")) require("tsx/cjs/api").register();
  for (const key of Object.keys(require.cache)) {
    if (
      key.startsWith(path.dirname(entry) + path.sep) &&
      !key.includes(`${path.sep}node_modules${path.sep}`)
    ) {
      delete require.cache[key];
    }
  }
  const exported = require(entry);
  return typeof exported?.default === "function" ? await exported.default() : { ...exported };
}
