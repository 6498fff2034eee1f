import { execFileSync } from "child_process";
import { randomBytes, randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ClusterClient, waitForOperation } from "../../provider/client";
import { packDirectory } from "../../provider/image";
import { startWorld, stopWorld } from "../../provider/world";

/**
 * Benchmarks: `npm run bench -- <name>`. Each prints one JSON line per result, with the
 * baseline it is measured against in the same run.
 */
const BENCHES: Record<string, () => Promise<void>> = { transfer: benchTransfer };

/** Writes `size` random bytes to a file, 16 MiB at a time. */
function randomFile(file: string, size: number): void {
  const fd = fs.openSync(file, "w");
  const block = 16 * 1024 * 1024;
  for (let done = 0; done < size; done += block) fs.writeSync(fd, randomBytes(Math.min(block, size - done)));
  fs.closeSync(fd);
}

function seconds(since: bigint): number {
  return Number(process.hrtime.bigint() - since) / 1e9;
}

/**
 * A 1 GiB image datacenter to datacenter (streamed, every chunk verified and fsynced, the
 * whole re-verified before the catalog says present), against `cp` + `sync` of the same file.
 */
async function benchTransfer(): Promise<void> {
  const sizeMiB = Number(process.env.GCI_BENCH_SIZE_MIB ?? 1024);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-bench-"));
  try {
    const src = path.join(tmp, "src");
    fs.mkdirSync(src);
    randomFile(path.join(src, "disk.img"), sizeMiB * 1024 * 1024 - 8 * 1024 * 1024);
    randomFile(path.join(src, "vmlinuz"), 4 * 1024 * 1024);
    randomFile(path.join(src, "initrd.img"), 4 * 1024 * 1024);
    const archive = path.join(tmp, "image.tar");
    const packed = await packDirectory(
      src,
      {
        schema: "gci.image/v1",
        name: "bench",
        driver: "qemu",
        kernel: "vmlinuz",
        initrd: "initrd.img",
        disk: "disk.img",
      },
      archive,
    );
    fs.rmSync(src, { recursive: true });

    // Baseline: cp + sync of the same bytes on the same disk.
    execFileSync("sync");
    let t = process.hrtime.bigint();
    execFileSync("cp", [archive, path.join(tmp, "copy.tar")]);
    execFileSync("sync");
    const cpSync = seconds(t);
    fs.rmSync(path.join(tmp, "copy.tar"));

    const world = await startWorld(path.join(tmp, "world"), { regions: { us: ["us-1"], eu: ["eu-1"] } });
    const [us1, eu1] = world.datacenters.map((d) => new ClusterClient(d.endpoint, { deadlineMs: 600_000 }));
    try {
      await us1.uploadImage(fs.createReadStream(archive, { highWaterMark: 1024 * 1024 }), {
        request_id: randomUUID(),
        name: "bench",
      });
      execFileSync("sync");
      t = process.hrtime.bigint();
      const op = await us1.startVms({
        request_id: randomUUID(),
        image_digest: packed.digest,
        datacenter: "eu-1",
        count: 1,
      });
      const done = await waitForOperation(eu1, op, { timeoutMs: 600_000 });
      const transfer = seconds(t);
      const wire = done.start_vms?.transfer?.bytes ?? 0;
      console.log(
        JSON.stringify({
          bench: "transfer",
          bytes: packed.sizeBytes,
          wireBytes: wire,
          transferSeconds: +transfer.toFixed(3),
          baseline: "cp+sync",
          baselineSeconds: +cpSync.toFixed(3),
          transferMiBps: +(packed.sizeBytes / 1048576 / transfer).toFixed(1),
          baselineMiBps: +(packed.sizeBytes / 1048576 / cpSync).toFixed(1),
          ratio: +(cpSync / transfer).toFixed(3),
          target: ">= 0.5",
        }),
      );
      if (process.env.GCI_BENCH_LOGS) {
        for (const d of world.datacenters) process.stderr.write(fs.readFileSync(d.logFile, "utf8"));
      }
    } finally {
      us1.close();
      eu1.close();
      await stopWorld(world.dir);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const names = process.argv.slice(2);
  for (const name of names.length > 0 ? names : Object.keys(BENCHES)) {
    const bench = BENCHES[name];
    if (!bench)
      throw new Error(`unknown benchmark "${name}": choose from ${Object.keys(BENCHES).join(", ")}`);
    await bench();
  }
}

main().catch((e) => {
  console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
