import * as fs from "fs";

/**
 * What /proc says of a process, for those who must tell a live process from a pid reused or a
 * zombie left: the cluster manager (its instances) and the local world (its daemons).
 */

/** State letter and start time (clock ticks since boot) of a process, from /proc/<pid>/stat. */
export function procStat(pid: number): { state: string; startTime: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
  return { state: fields[0], startTime: fields[19] };
}

/** True while `pid` is the process that started at `startTime` and has not exited (zombies have). */
export function isSameProcess(pid: number, startTime: string): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.startTime === startTime && stat.state !== "Z" && stat.state !== "X";
}
