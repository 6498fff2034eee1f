/**
 * `gci world up` and `gci datacenter restart`: a world started or healed (each datacenter kept
 * while it serves, else started again on its endpoint), and one datacenter restarted in place.
 */

import * as path from "path";
import { notFound, precondition } from "../common/errors";
import { daemonLiveness, isDaemon, killAndWait, killQuietly, waitUntilGone } from "./liveness";
import { type DatacenterProcess, type WorldState, readWorld } from "./record";
import { DEFAULT_SPEC, type WorldSpec, checkSpec, specChange } from "./spec";
import { restartOnEndpoint, startFresh } from "./start";

/** What `gci world up` did to one datacenter. */
export type UpAction = "started" | "kept" | "restarted";

/** What upWorld did: the world as recorded now, each datacenter's action, and those that failed. */
export interface UpReport {
  readonly state: WorldState;
  readonly actions: { readonly name: string; readonly action: UpAction; readonly detail?: string }[];
  readonly failures: { readonly name: string; readonly error: Error }[];
}

/**
 * Starts a world, or heals the one recorded in `dir`: one cluster-manager process per
 * datacenter, one catalog, logs and data under `dir`. A fresh world is all or nothing. In a
 * recorded world each datacenter that serves is kept as it is (same process, its instances
 * untouched); one that is down, or hung, is started again on the port it had, so its endpoint
 * does not change. `spec` (undefined: the recorded one, else DEFAULT_SPEC) must match a
 * recorded world: a world is reshaped by `gci world down`, then `up`.
 */
export async function upWorld(dir: string, spec?: WorldSpec, extraArgs: string[] = []): Promise<UpReport> {
  dir = path.resolve(dir);
  if (spec !== undefined) checkSpec(spec, "world spec");
  const running = readWorld(dir);
  if (running) return healWorld(running, spec, extraArgs);
  const state = await startFresh(dir, spec ?? DEFAULT_SPEC, extraArgs);
  return {
    state,
    actions: state.datacenters.map((d) => ({ name: d.name, action: "started" as const })),
    failures: [],
  };
}

/** upWorld, throwing the first datacenter's failure; returns the world as recorded. */
export async function startWorld(
  dir: string,
  spec?: WorldSpec,
  extraArgs: string[] = [],
): Promise<WorldState> {
  const report = await upWorld(dir, spec, extraArgs);
  if (report.failures.length > 0) throw report.failures[0].error;
  return report.state;
}

/** Restarts the datacenters of a recorded world that are down or hung; the others are left alone. */
async function healWorld(
  state: WorldState,
  spec: WorldSpec | undefined,
  extraArgs: string[],
): Promise<UpReport> {
  const problem = specChange(state, spec, extraArgs);
  if (problem !== undefined) {
    throw precondition(
      `the world in "${state.dir}" runs ${problem}; \`gci world up\` only restarts what is down. ` +
        `To change a world, stop it with \`gci world down --world ${state.dir}\`, then start it with the new shape`,
    );
  }
  const args = state.args ?? extraArgs;
  const report: UpReport = { state, actions: [], failures: [] };
  await Promise.all(
    state.datacenters.map(async (dc) => {
      try {
        const liveness = await daemonLiveness(dc);
        if (liveness.state === "serving") {
          report.actions.push({ name: dc.name, action: "kept" });
          return;
        }
        if (liveness.state === "hung") await killAndWait(dc);
        await restartOnEndpoint(state, dc, args);
        report.actions.push({ name: dc.name, action: "restarted", detail: liveness.reason });
      } catch (e) {
        report.failures.push({ name: dc.name, error: e as Error });
      }
    }),
  );
  const order = (name: string) => state.datacenters.findIndex((d) => d.name === name);
  report.actions.sort((a, b) => order(a.name) - order(b.name));
  report.failures.sort((a, b) => order(a.name) - order(b.name));
  return report;
}

/** What restartDatacenter did. */
export interface RestartReport {
  readonly before: DatacenterProcess;
  readonly after: DatacenterProcess;
  /** How the old daemon ended: "stopped" (SIGUSR2), "killed" (SIGKILL after the grace), "gone" (it was not running). */
  readonly old: "stopped" | "killed" | "gone";
}

/**
 * Restarts one datacenter's cluster manager on the same endpoint, leaving its VMs and process
 * instances running: the old daemon gets SIGUSR2 ("stop serving, keep instances"), SIGKILL
 * after `graceMs`, and the new one adopts the instances. Other datacenters are not touched.
 */
export async function restartDatacenter(
  state: WorldState,
  name: string,
  opts: { graceMs?: number; extraArgs?: string[]; env?: NodeJS.ProcessEnv; newPort?: boolean } = {},
): Promise<RestartReport> {
  const before = state.datacenters.find((d) => d.name === name);
  if (!before) {
    throw notFound(
      `datacenter "${name}" is not in the world in "${state.dir}": its datacenters are ${state.datacenters.map((d) => d.name).join(", ")}`,
    );
  }
  let old: RestartReport["old"] = "gone";
  if (isDaemon(before)) {
    killQuietly(before.pid, "SIGUSR2");
    await waitUntilGone(before, opts.graceMs ?? 15_000);
    old = "stopped";
    if (isDaemon(before)) {
      old = "killed";
      await killAndWait(before);
    }
  }
  const after = await restartOnEndpoint(state, before, opts.extraArgs, opts.env, opts.newPort);
  return { before, after, old };
}
