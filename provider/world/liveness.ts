/**
 * Whether a world's recorded daemons still run and serve, and the signals sent to them. A pid
 * is signalled only while it is the recorded daemon (same start time, see daemonGone).
 */

import * as fs from "fs";
import { ClusterClient } from "../common/client";
import { unavailable } from "../common/errors";
import { isSameProcess, procStat } from "../common/proc";
import { type DatacenterProcess, daemonMain } from "./record";

/** True while `pid` runs: a zombie (killed, not yet reaped by its parent) has exited. */
export function isAlive(pid: number): boolean {
  const stat = procStat(pid);
  if (stat !== undefined) return stat.state !== "Z" && stat.state !== "X";
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    // ESRCH: it has exited. EPERM: another user's process, so none this world started.
    return false;
  }
}

/**
 * Why the process world.json names for `dc` is not its cluster manager any more, or undefined
 * while it is: the same start time, or (a world.json of an older GCI, without one) a command
 * line that runs this daemon for that datacenter. Only then is it signalled.
 */
export function daemonGone(dc: DatacenterProcess): string | undefined {
  const stat = procStat(dc.pid);
  if (stat === undefined || stat.state === "Z" || stat.state === "X") return "it has exited";
  if (dc.startTime !== undefined) {
    return isSameProcess(dc.pid, dc.startTime)
      ? undefined
      : `pid ${dc.pid} now belongs to another process (it started at another time), not signalled`;
  }
  return runsDaemonFor(dc.pid, dc.name)
    ? undefined
    : `pid ${dc.pid} now belongs to another program, not signalled`;
}

/** True when `pid`'s command line is this cluster manager's, for `datacenter`. */
function runsDaemonFor(pid: number, datacenter: string): boolean {
  let args: string[];
  try {
    args = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    // The process exited between the checks (its /proc entry went): it is not the daemon.
    return false;
  }
  const flag = args.indexOf("--datacenter");
  return args.includes(daemonMain()) && flag >= 0 && args[flag + 1] === datacenter;
}

/** True while the process world.json names for `dc` is still its cluster manager. */
export const isDaemon = (dc: DatacenterProcess): boolean => daemonGone(dc) === undefined;

/** How long a live daemon has to answer a health check before it counts as hung. */
const HEALTH_DEADLINE_MS = 5000;

/**
 * Whether a datacenter's recorded daemon serves: "down" when its process is gone (exited, a
 * zombie, or its pid is another program's now), "hung" when it lives but does not answer
 * SERVING within HEALTH_DEADLINE_MS.
 */
export async function daemonLiveness(
  dc: DatacenterProcess,
): Promise<{ readonly state: "serving" | "down" | "hung"; readonly reason?: string }> {
  const gone = daemonGone(dc);
  if (gone !== undefined) return { state: "down", reason: `pid ${dc.pid}: ${gone}` };
  const client = new ClusterClient(dc.endpoint);
  try {
    const health = await client.checkHealth(HEALTH_DEADLINE_MS);
    if (health === "SERVING") return { state: "serving" };
    return { state: "hung", reason: `pid ${dc.pid} answers ${health}` };
  } catch (e) {
    // The process may be a kill -9 that has not finished exiting: it counts as down then.
    if (daemonGone(dc) !== undefined) return { state: "down", reason: `pid ${dc.pid} has exited` };
    return { state: "hung", reason: `pid ${dc.pid} does not answer: ${(e as Error).message}` };
  } finally {
    client.close();
  }
}

/** SIGKILL of a recorded daemon that is still that daemon, and a wait until it is gone. */
export async function killAndWait(dc: DatacenterProcess, timeoutMs = 10_000): Promise<void> {
  if (isDaemon(dc)) killQuietly(dc.pid, "SIGKILL");
  await waitUntilGone(dc, timeoutMs);
  if (isDaemon(dc)) {
    throw unavailable(
      `cluster manager of ${dc.name} (pid ${dc.pid}) still runs ${timeoutMs / 1000} s after SIGKILL: ` +
        `it is stuck in the kernel; see \`cat /proc/${dc.pid}/stack\`, then run \`gci world up\` again`,
    );
  }
}

/** Polls until `dc` is not the recorded daemon any more, or `timeoutMs` passed (the caller checks which). */
export async function waitUntilGone(dc: DatacenterProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isDaemon(dc) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/** Sends `signal` to `pid`; a pid that is already gone is not an error (it is what was wanted). */
export function killQuietly(pid: number, signal: NodeJS.Signals = "SIGKILL"): void {
  try {
    process.kill(pid, signal);
  } catch {
    // ESRCH: already gone, which is what the signal was for. Callers signal only a child they
    // just started or a pid daemonGone confirmed is the recorded daemon.
  }
}
