import { randomUUID } from "crypto";
import { Command } from "commander";
import { waitForOperation } from "../client";
import { invalid } from "../errors";
import { ProgressBar, table } from "./output";
import { clientFor, requireWorld, withCatalog, worldDir } from "./world";

export function vmCommand(): Command {
  const cmd = new Command("vm").description("start and list VMs in a world");
  cmd
    .command("start")
    .description("start VMs from an image in a region or datacenter; the image is pulled there if missing")
    .requiredOption("--image <digest>", "the image's digest (see `gci image ls`)")
    .option("--region <name>", "the region to run in (a datacenter is picked by free capacity)")
    .option("--dc <name>", "the datacenter to run in")
    .option("--count <n>", "how many VMs", "1")
    .option("--vcpus <n>", "vCPUs per VM", "1")
    .option("--memory-mib <n>", "memory per VM, MiB", "256")
    .option("--via <name>", "the cluster manager to send the request to (default: one holding the image)")
    .option("--request-id <id>", "idempotency key (default: a new UUID)")
    .option("--timeout <seconds>", "give up waiting after this long", "600")
    .option("--world <dir>", "world folder")
    .option("--json", "print the finished operation as JSON")
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
      const bar = opts.json ? undefined : new ProgressBar("transfer");
      try {
        const op = await client.startVms({
          request_id: opts.requestId ?? randomUUID(),
          image_digest: opts.image,
          region: opts.region ?? "",
          datacenter: opts.dc ?? "",
          count: Number(opts.count),
          vcpus: Number(opts.vcpus),
          memory_mib: Number(opts.memoryMib),
        });
        // The operation runs where the request landed, which may be another datacenter.
        const runner = op.datacenter && op.datacenter !== via ? clientFor(state, op.datacenter) : client;
        const done = await waitForOperation(runner, op, {
          timeoutMs: Number(opts.timeout) * 1000,
          onProgress: (o) => {
            if (o.progress?.phase === "transfer")
              bar?.update(
                o.progress.bytes_done,
                o.progress.bytes_total,
                `${((o.progress.rate ?? 0) / 1048576).toFixed(1)} MiB/s`,
              );
          },
        });
        if (runner !== client) runner.close();
        const t = done.start_vms?.transfer;
        bar?.done(t ? `${t.bytes} bytes from ${t.source} in ${t.seconds.toFixed(1)} s` : "none needed");
        if (opts.json) console.log(JSON.stringify(done, null, 2));
        else
          console.log(
            `accepted in ${done.start_vms?.datacenter} (region ${done.start_vms?.region}); operation ${done.id}`,
          );
      } finally {
        client.close();
      }
    });
  cmd
    .command("ls")
    .description("VMs in the world")
    .option("--world <dir>", "world folder")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const state = requireWorld(worldDir(opts.world));
      const vms = await withCatalog(state, (c) => c.listVms());
      if (opts.json) console.log(JSON.stringify(vms, null, 2));
      else
        console.log(
          table(
            ["id", "datacenter", "state", "request"],
            vms.map((v) => [v.id, v.datacenter, v.state, v.requestId]),
          ),
        );
    });
  return cmd;
}
