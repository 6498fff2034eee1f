import { Command } from "commander";
import { openCatalog, Catalog } from "../catalog";
import { ClusterClient } from "../common/client";
import { notFound, precondition } from "../common/errors";
import {
  readSpec,
  specFromFlags,
  stopWorldReport,
  upWorld,
  WorldState,
  worldDir,
  worldStatus,
} from "../world";
import { table, wholeNumber } from "./output";

export { requireWorld, worldDir } from "../world";

/**
 * A client of the named datacenter's cluster manager. It starts at the world's record and,
 * when the cluster manager does not answer, looks up where it listens now in the catalog
 * (a restarted one writes its endpoint there) and retries idempotent calls, saying so on
 * stderr.
 */
export function clientFor(state: WorldState, datacenter: string): ClusterClient {
  const dc = state.datacenters.find((d) => d.name === datacenter);
  if (!dc) {
    throw notFound(
      `datacenter "${datacenter}" is not in this world (${state.datacenters.map((d) => d.name).join(", ")})`,
    );
  }
  return new ClusterClient(dc.endpoint, {
    datacenter: {
      name: datacenter,
      resolve: () => withCatalog(state, async (c) => (await c.getDatacenter(datacenter))?.endpoint),
    },
    retry: {
      onRetry: (e) =>
        process.stderr.write(
          `${e.datacenter} unavailable, retrying (${Math.round(e.elapsedMs / 1000)} s)...\n`,
        ),
    },
  });
}

/** Opens the world's catalog for the duration of `fn`. */
export async function withCatalog<T>(state: WorldState, fn: (c: Catalog) => Promise<T>): Promise<T> {
  const catalog = await openCatalog(state.catalog);
  try {
    return await fn(catalog);
  } finally {
    await catalog.close();
  }
}

export function worldCommand(): Command {
  const cmd = new Command("world").description(
    "run a local world: one cluster manager per datacenter, one catalog",
  );
  cmd
    .command("up")
    .description(
      "start a world (default: regions us:2, eu:1, ap:1); in a running world, restart only the datacenters that are down, on their endpoints",
    )
    .option(
      "--world <dir>",
      "world folder (default $GCI_WORLD, else world/ in the state folder: see `gci env`)",
    )
    .option("--config <file>", 'world config JSON: {"regions": {"us": ["us-1", "us-2"]}, "vcpus": 16}')
    .option(
      "--region <name[:count]>",
      "a region and its number of datacenters, repeatable (e.g. --region us:2 --region eu)",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option(
      "--max-transfer-rate <bytes>",
      "cap each cluster manager's outgoing transfers, bytes/s",
      wholeNumber(1, Number.MAX_SAFE_INTEGER),
    )
    .option("--json", "print the world as JSON")
    .action(async (opts) => {
      // No shape on the command line: a recorded world keeps its own, a new one gets the default.
      const spec = opts.config ? readSpec(opts.config) : opts.region ? specFromFlags(opts.region) : undefined;
      const extra = opts.maxTransferRate ? ["--max-transfer-rate", String(opts.maxTransferRate)] : [];
      const { state, actions, failures } = await upWorld(worldDir(opts.world), spec, extra);
      const actionOf = (name: string) => {
        const a = actions.find((x) => x.name === name);
        if (a) return a.detail ? `${a.action} (${a.detail})` : a.action;
        return "FAILED";
      };
      if (opts.json)
        console.log(JSON.stringify({ ...state, actions, failures: failures.map(failureJson) }, null, 2));
      else {
        console.log(
          table(
            ["datacenter", "region", "endpoint", "pid", "action"],
            state.datacenters.map((d) => [
              d.name,
              d.region,
              d.endpoint,
              failures.some((f) => f.name === d.name) ? "-" : String(d.pid),
              actionOf(d.name),
            ]),
          ),
        );
        console.log(`\nworld folder: ${state.dir}\ncatalog: ${state.catalog}\nstop it with: gci world down`);
      }
      if (failures.length > 0) {
        // Exit 0 only when every datacenter serves; the others keep running.
        for (const f of failures.slice(1)) console.error(`gci: ${f.name}: ${f.error.message}`);
        throw failures.length === 1
          ? failures[0].error
          : precondition(
              `${failures.length} datacenters did not start, the first: ${failures[0].error.message}`,
            );
      }
    });
  cmd
    .command("status")
    .description("each datacenter's health, images and transfers")
    .option("--world <dir>", "world folder")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const rows = await worldStatus(worldDir(opts.world));
      if (opts.json) console.log(JSON.stringify(rows, null, 2));
      else {
        console.log(
          table(
            ["datacenter", "region", "endpoint", "pid", "health", "images", "transfers"],
            rows.map((r) => [
              r.name,
              r.region,
              r.endpoint,
              r.health === "DOWN" ? "-" : String(r.pid),
              r.health,
              String(r.images),
              String(r.transfers),
            ]),
          ),
        );
      }
      if (rows.some((r) => r.health !== "SERVING")) process.exitCode = 1;
    });
  cmd
    .command("down")
    .description("stop every cluster manager of the world (data and catalog are kept)")
    .option("--world <dir>", "world folder")
    .action(async (opts) => {
      const report = await stopWorldReport(worldDir(opts.world));
      for (const g of report.gone)
        console.log(`cluster manager of ${g.name} (pid ${g.pid}) is gone: ${g.reason}`);
      const n = report.stopped.length;
      if (n > 0) console.log(`stopped ${n} cluster managers`);
      else if (report.gone.length === 0) console.log("no world was running");
    });
  return cmd;
}

function failureJson(f: { name: string; error: Error }): { name: string; error: string } {
  return { name: f.name, error: f.error.message };
}
