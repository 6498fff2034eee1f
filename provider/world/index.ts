/**
 * A local world: one cluster-manager process per datacenter on 127.0.0.1, one catalog, its
 * record in <dir>/world.json. The parts live beside this file; this is the one import for them.
 */

export { DEFAULT_SPEC, readSpec, specFromFlags } from "./spec";
export type { WorldSpec } from "./spec";
export { readWorld, requireWorld, worldDir } from "./record";
export type { DatacenterProcess, WorldState } from "./record";
export { daemonGone, daemonLiveness, isAlive } from "./liveness";
export { restartOnEndpoint, startDatacenter } from "./start";
export { restartDatacenter, startWorld, upWorld } from "./heal";
export type { RestartReport, UpAction, UpReport } from "./heal";
export { stopWorld, stopWorldReport, worldStatus } from "./status";
export type { DatacenterStatus, StopReport } from "./status";
