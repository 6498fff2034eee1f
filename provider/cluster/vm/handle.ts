/**
 * Instance handles on disk: `<runDir>/instance.json`, written when an instance starts, so a
 * cluster manager that restarts finds (and can stop) the instances it had started.
 */

import * as fs from "fs";
import * as path from "path";
import { dataLoss } from "../../common/errors";
import type { InstanceHandle } from "./types";

/** The handle's file name inside the instance's run directory. */
export const HANDLE_FILE = "instance.json";

/** The one log file of each kind of instance, inside its run directory (GetVmLogs reads only it). */
export const LOG_FILE: Readonly<Record<InstanceHandle["kind"], string>> = {
  process: "output.log",
  vm: "console.log",
};

/** `<runDir>/<the kind's log file>`: the only log path ever read or written for an instance. */
export function logPath(runDir: string, kind: InstanceHandle["kind"]): string {
  return path.join(runDir, LOG_FILE[kind]);
}

/** Writes `<handle.runDir>/instance.json` atomically (a reader never sees half a file). */
export function saveHandle(handle: InstanceHandle): void {
  const file = path.join(handle.runDir, HANDLE_FILE);
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, JSON.stringify(handle, null, 2) + "\n", { mode: 0o644 });
  fs.renameSync(temporary, file);
}

/**
 * Reads the handle saved in `runDir`; undefined when there is none (the instance never got to
 * start). Throws DATA_LOSS naming the file when it is not a handle, or when it is the handle of
 * another folder: its id, runDir and logFile must be exactly those of `runDir`, so a planted
 * file cannot point the (root) cluster manager at other paths.
 */
export function loadHandle(runDir: string): InstanceHandle | undefined {
  const file = path.join(runDir, HANDLE_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw dataLoss(
      `${file} is not JSON (${(e as Error).message}); remove the file and stop the instance by hand`,
    );
  }
  const problem = handleProblem(value) ?? placeProblem(value as InstanceHandle, runDir);
  if (problem !== undefined) {
    throw dataLoss(
      `${file} is not an instance handle: ${problem}; remove the file and stop the instance by hand`,
    );
  }
  return value as InstanceHandle;
}

/** Why a well-formed handle does not belong in `runDir`, if it does not. */
function placeProblem(handle: InstanceHandle, runDir: string): string | undefined {
  const dir = path.resolve(runDir);
  if (handle.id !== path.basename(dir)) return `"id" is ${JSON.stringify(handle.id)}, not its folder's name`;
  if (path.resolve(handle.runDir) !== dir) return `"runDir" is ${JSON.stringify(handle.runDir)}, not ${dir}`;
  const log = logPath(dir, handle.kind);
  if (path.resolve(handle.logFile) !== log)
    return `"logFile" is ${JSON.stringify(handle.logFile)}, not ${log}`;
  return undefined;
}

function handleProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object";
  const v = value as Record<string, unknown>;
  for (const key of ["id", "logFile", "runDir", "startTime"]) {
    if (typeof v[key] !== "string") return `"${key}" is not a string`;
  }
  if (v.kind !== "vm" && v.kind !== "process")
    return `"kind" is ${JSON.stringify(v.kind)}, not "vm" or "process"`;
  if (typeof v.pid !== "number" || !Number.isInteger(v.pid) || v.pid < 1) return `"pid" is not a process id`;
  const addresses = v.addresses;
  if (typeof addresses !== "object" || addresses === null || Array.isArray(addresses)) {
    return `"addresses" is not an object`;
  }
  for (const [port, address] of Object.entries(addresses)) {
    if (typeof address !== "string") return `"addresses.${port}" is not a string`;
  }
  // Removed when the instance ends: only cgroup directories are accepted.
  const cgroups = v.cgroups;
  if (
    cgroups !== undefined &&
    (!Array.isArray(cgroups) ||
      cgroups.some((d) => typeof d !== "string" || !d.startsWith("/sys/fs/cgroup/") || d.includes("..")))
  ) {
    return `"cgroups" is not a list of directories under /sys/fs/cgroup`;
  }
  if (v.uid !== undefined && !(typeof v.uid === "number" && Number.isInteger(v.uid) && v.uid > 0)) {
    return `"uid" is not a user id`;
  }
  return helpersProblem(v.helpers);
}

/** Processes the driver signals when the instance stops: each a pid with its start time. */
function helpersProblem(helpers: unknown): string | undefined {
  if (helpers === undefined) return undefined;
  const valid = (h: unknown): boolean => {
    const p = h as Record<string, unknown> | null;
    return (
      typeof p === "object" &&
      p !== null &&
      typeof p.pid === "number" &&
      Number.isInteger(p.pid) &&
      p.pid > 1 &&
      typeof p.startTime === "string"
    );
  };
  if (!Array.isArray(helpers) || !helpers.every(valid)) {
    return `"helpers" is not a list of {pid, startTime}`;
  }
  return undefined;
}
