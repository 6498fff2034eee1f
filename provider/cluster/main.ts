import * as fs from "fs";
import { Command } from "commander";
import { ClusterManager, DEFAULT_MAX_UPLOAD_BYTES } from "./server";

/**
 * The cluster-manager process: `node dist/provider/cluster/main.js --datacenter us-1 ...`.
 * `gci world up` starts one per datacenter. It writes its endpoint to --ready-file once
 * serving. Signals:
 *   SIGTERM, SIGINT  the datacenter shuts down (`gci world down`): its VMs and process
 *                    instances are stopped, then the daemon exits.
 *   SIGUSR2          the daemon stops serving and exits, its VMs and process instances keep
 *                    running (`gci datacenter restart`): the next daemon adopts them.
 *   SIGKILL          like SIGUSR2 without the graceful end of in-flight calls.
 */
export async function main(argv: string[]): Promise<void> {
  const opts = new Command("gci-cluster-manager")
    .requiredOption("--datacenter <name>", "the datacenter this cluster manager runs")
    .requiredOption("--region <name>", "the datacenter's region")
    .requiredOption("--data <dir>", "data folder (image store, VM state)")
    .requiredOption("--catalog <url>", "catalog location: sqlite:/abs/path or etcd://host:port,...")
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--port <n>", "port to listen on (0 = any free port)", "0")
    .option("--vcpus <n>", "vCPUs the datacenter can run at once")
    .option("--memory-mib <n>", "memory the datacenter can run at once, MiB")
    .option("--max-transfer-rate <bytes>", "cap on outgoing transfers, bytes/s (0 = none)", "0")
    .option(
      "--max-upload-bytes <bytes>",
      "largest image archive this datacenter accepts, by upload or transfer",
      String(DEFAULT_MAX_UPLOAD_BYTES),
    )
    .option("--chunk-grace-ms <ms>", "how long chunks of a failed transfer are kept for a retry")
    .option("--transfer-retry-ms <ms>", "how long a transfer keeps retrying before it fails")
    .option("--ready-file <path>", "write {endpoint, pid} here once serving")
    .parse(argv)
    .opts();
  const cm = new ClusterManager({
    datacenter: opts.datacenter,
    region: opts.region,
    dataDir: opts.data,
    catalog: opts.catalog,
    host: opts.host,
    port: Number(opts.port),
    capacity: opts.vcpus
      ? { vcpus: Number(opts.vcpus), memoryMiB: Number(opts.memoryMib ?? 32768) }
      : undefined,
    maxTransferRate: Number(opts.maxTransferRate),
    maxUploadBytes: Number(opts.maxUploadBytes),
    chunkGraceMs: opts.chunkGraceMs === undefined ? undefined : Number(opts.chunkGraceMs),
    transferRetryMs: opts.transferRetryMs === undefined ? undefined : Number(opts.transferRetryMs),
  });
  const endpoint = await cm.start();
  if (opts.readyFile) {
    fs.writeFileSync(opts.readyFile + ".tmp", JSON.stringify({ endpoint, pid: process.pid }));
    fs.renameSync(opts.readyFile + ".tmp", opts.readyFile);
  }
  let stopping = false;
  const stop = (stopInstances: boolean) => () => {
    if (stopping) return;
    stopping = true;
    cm.log.info("stopping", { instances: stopInstances ? "stop" : "keep" });
    cm.stop(5000, stopInstances).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", stop(true));
  process.on("SIGINT", stop(true));
  process.on("SIGUSR2", stop(false));
  // A handler never crashes the daemon: anything that escapes is logged, not fatal.
  process.on("unhandledRejection", (e) => cm.log.error("unhandled", { error: String(e) }));
}

if (require.main === module) {
  main(process.argv).catch((e) => {
    console.error(
      JSON.stringify({
        ts: new Date().toISOString(),
        level: "fatal",
        event: "start.failed",
        error: String(e?.message ?? e),
      }),
    );
    process.exit(1);
  });
}
