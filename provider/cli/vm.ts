import { randomUUID } from "crypto";
import { Command } from "commander";
import type { DatacenterRecord, VmGroupRecord, VmRecord } from "../catalog";
import { ClusterClient, Operation, waitForOperation } from "../common/client";
import { invalid } from "../common/errors";
import { WorldState } from "../world";
import { ProgressBar, table, wholeNumber } from "./output";
import { clientFor, requireWorld, withCatalog, worldDir } from "./world";

const kindOf = (id: string) => (id.startsWith("proc-") ? "process" : "vm");

/** A datacenter whose cluster manager has not written its heartbeat (every 2 s) for this long is down. */
const HEARTBEAT_STALE_MS = 10_000;

/** A VM group as `gci vm ls` shows it: its record, how many of its VMs run, and its state. */
export interface GroupRow {
  readonly requestId: string;
  readonly datacenter: string;
  readonly digest: string;
  readonly count: number;
  readonly running: number;
  /** running (all of count), starting, stopping, degraded (some), down (none), not started (no VM yet). */
  readonly state: string;
  /** Whether its datacenter's cluster manager wrote a heartbeat lately. */
  readonly managerAnswering: boolean;
  readonly vcpus: number;
  readonly memoryMiB: number;
  readonly createdAt: number;
}

/**
 * Every group, also one with no VM (accepted, then its cluster manager died): a group holds
 * its datacenter's capacity and its image until it is stopped, so none may be hidden.
 */
export function groupRows(
  groups: readonly VmGroupRecord[],
  vms: readonly VmRecord[],
  datacenters: readonly DatacenterRecord[],
  now: number,
): GroupRow[] {
  const heartbeat = new Map(datacenters.map((d) => [d.name, d.heartbeatAt]));
  return groups.map((g) => {
    const mine = vms.filter((v) => v.requestId === g.requestId);
    const running = mine.filter((v) => v.state === "running").length;
    return {
      requestId: g.requestId,
      datacenter: g.datacenter,
      digest: g.digest,
      count: g.count,
      running,
      state: groupState(g.count, running, mine),
      managerAnswering: now - (heartbeat.get(g.datacenter) ?? 0) < HEARTBEAT_STALE_MS,
      vcpus: g.vcpus,
      memoryMiB: g.memoryMiB,
      createdAt: g.createdAt,
    };
  });
}

function groupState(count: number, running: number, vms: readonly VmRecord[]): string {
  if (running >= count) return "running";
  if (vms.some((v) => v.state === "stopping")) return "stopping";
  if (vms.some((v) => v.state === "provisioning" || v.state === "booting")) return "starting";
  if (running > 0) return "degraded";
  return vms.length === 0 ? "not started" : "down";
}

/**
 * Waits for an operation where it runs (maybe another datacenter than the one asked). With
 * `reissue` (the same idempotent request, sent to the one asked), an operation forgotten by
 * a restarted cluster manager is asked for again and followed on.
 */
async function follow(
  state: WorldState,
  askedName: string,
  asked: ClusterClient,
  op: Operation,
  timeoutMs: number,
  onProgress?: (op: Operation) => void,
  reissue?: () => Promise<Operation>,
): Promise<Operation> {
  const runner = op.datacenter && op.datacenter !== askedName ? clientFor(state, op.datacenter) : asked;
  try {
    return await waitForOperation(runner, op, { timeoutMs, onProgress, reissue });
  } finally {
    if (runner !== asked) runner.close();
  }
}

export function vmCommand(): Command {
  const cmd = new Command("vm").description(
    "start, list, stop and read the logs of VMs (and process instances)",
  );
  cmd
    .command("start")
    .description("start VMs from an image in a region or datacenter; the image is pulled there if missing")
    .requiredOption("--image <digest>", "the image's digest (see `gci image ls`)")
    .option("--region <name>", "the region to run in (a datacenter is picked by free capacity)")
    .option("--dc <name>", "the datacenter to run in")
    .option("--count <n>", "how many VMs (1 to 1000)", wholeNumber(1, 1000), 1)
    .option("--size <name>", "machine size: nano, micro, small, medium, large", "micro")
    .option("--via <name>", "the cluster manager to send the request to (default: one holding the image)")
    .option("--request-id <id>", "idempotency key (default: a new UUID); repeat it to get the same VMs")
    .option("--timeout <seconds>", "give up waiting after this long", wholeNumber(1, 86_400), 600)
    .option("--world <dir>", "world folder")
    .option("--json", "print the finished operation and the VMs as JSON")
    .action(async (opts) => {
      if (!opts.region && !opts.dc) throw invalid("gci vm start needs --region <name> or --dc <name>");
      const state = requireWorld(worldDir(opts.world));
      const via =
        opts.via ??
        (await withCatalog(
          state,
          async (c) => (await c.listPlacements(opts.image)).find((p) => p.state === "present")?.datacenter,
        )) ??
        state.datacenters[0].name;
      const client = clientFor(state, via);
      const transfer = opts.json ? undefined : new ProgressBar("transfer");
      let phase = "";
      try {
        const requestId = opts.requestId ?? randomUUID();
        const request = {
          request_id: requestId,
          image_digest: opts.image,
          region: opts.region ?? "",
          datacenter: opts.dc ?? "",
          count: opts.count,
          machine_size: opts.size,
        };
        const op = await client.startVms(request);
        const reissue = () => {
          process.stderr.write(
            `request ${requestId} was forgotten by a restarted cluster manager: sending it again\n`,
          );
          return client.startVms(request);
        };
        const onProgress = (o: Operation) => {
          const p = o.progress;
          if (!p || opts.json) return;
          if (p.phase === "transfer")
            transfer?.update(p.bytes_done, p.bytes_total, `${((p.rate ?? 0) / 1048576).toFixed(1)} MiB/s`);
          if (p.phase === "boot" && phase !== "boot") {
            const t = o.start_vms?.transfer;
            transfer?.done(t ? `${t.bytes} bytes from ${t.source}` : "");
            process.stderr.write(`boot: ${p.chunks_total} instance(s) in ${o.datacenter}\n`);
          }
          phase = p.phase;
        };
        const done = await follow(state, via, client, op, opts.timeout * 1000, onProgress, reissue);
        const t = done.start_vms?.transfer;
        if (!opts.json) {
          process.stderr.write(
            t
              ? `transfer: ${t.bytes} bytes ${t.source} -> ${t.destination} in ${t.seconds.toFixed(1)} s\n`
              : "transfer: none needed\n",
          );
        }
        const vms = await client.listVms(requestId);
        if (opts.json) console.log(JSON.stringify({ operation: done, vms }, null, 2));
        else {
          console.log(
            `request ${requestId}: ${vms.length} running in ${done.start_vms?.datacenter} (region ${done.start_vms?.region})`,
          );
          console.log(
            table(
              ["id", "kind", "state", "addresses"],
              vms.map((v) => [
                v.id,
                v.kind,
                v.state,
                v.addresses.map((a) => `${a.guest_port}->${a.address}`).join(" "),
              ]),
            ),
          );
        }
      } finally {
        client.close();
      }
    });
  cmd
    .command("ls")
    .description("VMs and process instances in the world")
    .option("--world <dir>", "world folder")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const state = requireWorld(worldDir(opts.world));
      const { vms, groups } = await withCatalog(state, async (c) => {
        const [vms, groups, dcs] = [await c.listVms(), await c.listVmGroups(), await c.listDatacenters()];
        return { vms, groups: groupRows(groups, vms, dcs, Date.now()) };
      });
      if (opts.json) console.log(JSON.stringify({ vms, groups }, null, 2));
      else {
        console.log(
          table(
            ["id", "kind", "datacenter", "state", "addresses", "request"],
            vms.map((v) => [
              v.id,
              kindOf(v.id),
              v.datacenter,
              v.state,
              Object.entries(v.addresses)
                .map(([p, a]) => `${p}->${a}`)
                .join(" "),
              v.requestId,
            ]),
          ),
        );
        console.log(
          "\n" +
            table(
              ["request", "datacenter", "image", "vms", "state"],
              groups.map((g) => [
                g.requestId,
                g.datacenter,
                g.digest.slice(0, 19),
                `${g.running}/${g.count} running`,
                g.managerAnswering ? g.state : `${g.state} (${g.datacenter} not answering)`,
              ]),
            ),
        );
      }
    });
  cmd
    .command("stop <start-request-id>")
    .description(
      "stop the VMs of a start request (all, or --vm ones); a group whose cluster manager is down and " +
        "that has no VM running is forgotten through another datacenter",
    )
    .option("--vm <id...>", "only these VMs")
    .option("--via <name>", "the cluster manager to send the request to (default: the world's first)")
    .option("--world <dir>", "world folder")
    .action(async (startRequestId: string, opts) => {
      const state = requireWorld(worldDir(opts.world));
      const via: string = opts.via ?? state.datacenters[0].name;
      const client = clientFor(state, via);
      try {
        const op = await client.stopVms(randomUUID(), startRequestId, opts.vm ?? []);
        await follow(state, via, client, op, 120_000);
        console.log(`stopped ${opts.vm ? opts.vm.join(", ") : `the VMs of ${startRequestId}`}`);
      } finally {
        client.close();
      }
    });
  cmd
    .command("logs <vm-id>")
    .description("the serial console of a VM (or the output of a process instance)")
    .option("--tail <bytes>", "how much of the end", wholeNumber(1, 64 << 20), 65536)
    .option("--world <dir>", "world folder")
    .action(async (vmId: string, opts) => {
      const state = requireWorld(worldDir(opts.world));
      const client = clientFor(state, state.datacenters[0].name);
      try {
        process.stdout.write(await client.getVmLogs(vmId, opts.tail));
      } finally {
        client.close();
      }
    });
  return cmd;
}
