/** `gci world down` and `gci world status`: a world's daemons stopped, and each one's health. */

import * as fs from "fs";
import * as path from "path";
import { openCatalog } from "../catalog";
import { ClusterClient } from "../common/client";
import { isDaemon, daemonGone, killQuietly } from "./liveness";
import { type DatacenterProcess, readWorld, requireWorld, stateFile } from "./record";

/** What stopWorld did: the datacenters it stopped, and those whose process was already gone. */
export interface StopReport {
  readonly stopped: string[];
  readonly gone: { readonly name: string; readonly pid: number; readonly reason: string }[];
}

/**
 * Stops every cluster manager of the world and their instances (SIGTERM, then SIGKILL after
 * `graceMs`). Only a process that is still the recorded daemon (daemonGone) is signalled.
 */
export async function stopWorldReport(dir: string, graceMs = 30_000): Promise<StopReport> {
  const state = readWorld(path.resolve(dir));
  if (!state) return { stopped: [], gone: [] };
  const report: StopReport = { stopped: [], gone: [] };
  const live: DatacenterProcess[] = [];
  for (const dc of state.datacenters) {
    const reason = daemonGone(dc);
    if (reason === undefined) live.push(dc);
    else report.gone.push({ name: dc.name, pid: dc.pid, reason });
  }
  for (const dc of live) killQuietly(dc.pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (live.some(isDaemon) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const dc of live.filter(isDaemon)) killQuietly(dc.pid, "SIGKILL");
  fs.rmSync(stateFile(state.dir), { force: true });
  report.stopped.push(...live.map((d) => d.name));
  return report;
}

/** stopWorldReport, counting the cluster managers it stopped. */
export async function stopWorld(dir: string, graceMs = 30_000): Promise<number> {
  return (await stopWorldReport(dir, graceMs)).stopped.length;
}

/** One row of `gci world status`. */
export interface DatacenterStatus {
  readonly name: string;
  readonly region: string;
  readonly endpoint: string;
  readonly pid: number;
  readonly health: string;
  readonly images: number;
  readonly transfers: number;
}

/** Health (from the gRPC health service), images and transfers of each datacenter. */
export async function worldStatus(dir: string): Promise<DatacenterStatus[]> {
  const state = requireWorld(path.resolve(dir));
  const catalog = await openCatalog(state.catalog);
  try {
    const placements = await catalog.listPlacements();
    return await Promise.all(
      state.datacenters.map(async (dc) => {
        const client = new ClusterClient(dc.endpoint);
        // DOWN: its process is gone (a zombie too); UNREACHABLE: it lives but does not answer.
        const health = isDaemon(dc) ? await client.checkHealth(2000).catch(() => "UNREACHABLE") : "DOWN";
        client.close();
        const mine = placements.filter((p) => p.datacenter === dc.name);
        return {
          name: dc.name,
          region: dc.region,
          endpoint: dc.endpoint,
          pid: dc.pid,
          health,
          images: mine.filter((p) => p.state === "present").length,
          transfers: mine.filter((p) => p.state === "transferring").length,
        };
      }),
    );
  } finally {
    await catalog.close();
  }
}
