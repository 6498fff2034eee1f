/** A world's shape (regions and their datacenters): the spec type, its parsing and its checks. */

import * as fs from "fs";
import { checkName } from "../catalog/validate";
import { invalid } from "../common/errors";
import type { WorldState } from "./record";

/** The shape of a world: regions and their datacenters. */
export interface WorldSpec {
  /** Region name -> its datacenters' names. */
  readonly regions: Readonly<Record<string, readonly string[]>>;
  /**
   * Catalog location; a SQLite file in the world folder unless set.
   * @default "sqlite:<dir>/catalog.db"
   */
  readonly catalog?: string;
  /**
   * vCPUs each datacenter can run at once.
   * @default 16
   */
  readonly vcpus?: number;
  /**
   * Memory each datacenter can run at once, MiB.
   * @default 32768
   */
  readonly memoryMiB?: number;
}

/** The default world: three regions, four datacenters. */
export const DEFAULT_SPEC: WorldSpec = { regions: { us: ["us-1", "us-2"], eu: ["eu-1"], ap: ["ap-1"] } };

/** Parses `--region us:2` style flags ("us:2" -> us-1, us-2; "eu" -> eu-1). */
export function specFromFlags(flags: readonly string[]): WorldSpec {
  const regions: Record<string, string[]> = {};
  for (const flag of flags) {
    const m = /^([A-Za-z0-9-]+)(?::(\d+))?$/.exec(flag);
    if (!m || Number(m[2] ?? 1) < 1 || Number(m[2] ?? 1) > 32) {
      throw invalid(
        `--region "${flag}" is not <name>[:<datacenters>]: write it like "us:2" (1 to 32 datacenters)`,
      );
    }
    regions[m[1]] = Array.from({ length: Number(m[2] ?? 1) }, (_, i) => `${m[1]}-${i + 1}`);
  }
  return { regions };
}

/** Reads and checks a world config file (JSON: { "regions": { "us": ["us-1"] }, ... }). */
export function readSpec(file: string): WorldSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw invalid(
      `world config "${file}" is not readable JSON (${(e as Error).message}): see README.md for its shape`,
    );
  }
  return checkSpec(raw, file);
}

/** The spec checked: regions present, names valid, each datacenter once; else INVALID_ARGUMENT at `where`. */
export function checkSpec(raw: unknown, where: string): WorldSpec {
  const spec = raw as WorldSpec;
  if (!spec || typeof spec.regions !== "object" || Object.keys(spec.regions).length === 0) {
    throw invalid(`${where}: "regions" must map region names to datacenter names, e.g. {"us": ["us-1"]}`);
  }
  const seen = new Set<string>();
  for (const [region, dcs] of Object.entries(spec.regions)) {
    checkName("region", region);
    if (!Array.isArray(dcs) || dcs.length === 0)
      throw invalid(`${where}: region "${region}" needs a list of datacenter names`);
    for (const dc of dcs) {
      checkName("datacenter", dc);
      if (seen.has(dc))
        throw invalid(`${where}: datacenter "${dc}" appears twice: names are unique in a world`);
      seen.add(dc);
    }
  }
  return spec;
}

/** How a spec asked for differs from the recorded world, said as "<recorded>, not <asked>". */
export function specChange(
  state: WorldState,
  spec: WorldSpec | undefined,
  extraArgs: string[],
): string | undefined {
  if (spec !== undefined) {
    const shape = (s: WorldSpec) =>
      Object.entries(s.regions)
        .map(([r, dcs]) => `${r}: ${dcs.join(", ")}`)
        .join("; ");
    if (shape(spec) !== shape(state.spec)) return `regions ${shape(state.spec)}, not ${shape(spec)}`;
    if (spec.catalog !== undefined && spec.catalog !== state.catalog)
      return `catalog ${state.catalog}, not ${spec.catalog}`;
    if (spec.vcpus !== state.spec.vcpus || spec.memoryMiB !== state.spec.memoryMiB)
      return `capacity ${state.spec.vcpus ?? 16} vCPUs/${state.spec.memoryMiB ?? 32768} MiB, not ${spec.vcpus ?? 16}/${spec.memoryMiB ?? 32768}`;
  }
  const recorded = state.args ?? [];
  if (extraArgs.length > 0 && extraArgs.join(" ") !== recorded.join(" "))
    return `with daemon flags "${recorded.join(" ")}", not "${extraArgs.join(" ")}"`;
  return undefined;
}
