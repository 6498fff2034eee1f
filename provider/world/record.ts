/**
 * A world's record, <dir>/world.json: its types, where it and the daemon live, and its reading
 * (checked, since its pids are signalled) and atomic writing.
 */

import * as fs from "fs";
import * as path from "path";
import { precondition } from "../common/errors";
import { packageRoot, stateRoot } from "../common/paths";
import type { WorldSpec } from "./spec";

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

/** The compiled cluster-manager entry point (tests run this module from source, the daemon always from dist/). */
export function daemonMain(): string {
  return path.join(packageRoot(), "dist", "provider", "cluster", "main.js");
}

/** Where the record of the world in `dir` lives. */
export function stateFile(dir: string): string {
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

/** Writes world.json whole or not at all: a temporary file renamed over it. */
export function writeWorld(state: WorldState): void {
  const file = stateFile(state.dir);
  fs.writeFileSync(file + ".tmp", JSON.stringify(state, null, 2));
  fs.renameSync(file + ".tmp", file);
}
