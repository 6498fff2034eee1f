import { execFileSync } from "child_process";
import { randomBytes, randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ClusterClient, waitForOperation } from "../../provider/common/client";
import { packDirectory } from "../../provider/image";
import { startWorld, stopWorld } from "../../provider/world";

/**
 * Benchmarks: `npm run bench -- <name>`. Each prints one JSON line per result, with the
 * baseline it is measured against in the same run.
 */
const BENCHES: Record<string, () => Promise<void>> = { transfer: benchTransfer, boot: benchBoot };

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
 * archive validated as it arrives, before the catalog says present), against `cp` + `sync`.
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
      // A replicate moves the image and nothing else (a start would also boot its random "kernel").
      const op = await us1.replicateImage(randomUUID(), packed.digest, "eu-1");
      const done = await waitForOperation(eu1, op, { timeoutMs: 600_000 });
      const transfer = seconds(t);
      const wire = done.transfer?.bytes ?? 0;
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

/**
 * Time from a start request to all instances answering, for 1, 4 and 8 QEMU guests and 100
 * process instances: in a datacenter holding the image (boot alone), a replicate into a fresh
 * one (transfer alone), and a start in a fresh one that must first receive the ~100 MiB image
 * (the total, with its transfer and boot parts).
 */
async function benchBoot(): Promise<void> {
  const { guestImage, processImage } = await import("../support/guest");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-bench-boot-"));
  // GCI_BENCH_BOOT_KINDS=process runs only the process instances (a quick check of sandbox costs).
  const cases: { kind: "vm" | "process"; count: number }[] = (
    [
      { kind: "vm", count: 1 },
      { kind: "vm", count: 4 },
      { kind: "vm", count: 8 },
      { kind: "process", count: 100 },
    ] as const
  ).filter((c) => (process.env.GCI_BENCH_BOOT_KINDS ?? "vm,process").split(",").includes(c.kind));
  const regions: Record<string, string[]> = { home: ["home-1"] };
  cases.forEach((_c, i) => (regions[`r${i}`] = [`fresh-${i}`, `copy-${i}`]));
  const world = await startWorld(path.join(tmp, "world"), { regions, vcpus: 256, memoryMiB: 262144 });
  const clients = new Map(
    world.datacenters.map((d) => [d.name, new ClusterClient(d.endpoint, { deadlineMs: 600_000 })]),
  );
  const cm = (name: string) => clients.get(name)!;
  try {
    const images = {
      vm: await padImage(tmp, (await guestImage()).file, "guest"),
      process: await padImage(tmp, (await processImage()).file, "web"),
    };
    for (const image of Object.values(images)) {
      await cm("home-1").uploadImage(fs.createReadStream(image.file), { request_id: randomUUID(), name: "" });
    }
    for (const [i, c] of cases.entries()) {
      const image = images[c.kind];
      const size = c.kind === "vm" ? "micro" : "nano";
      const run = async (dc: string) => {
        const t = process.hrtime.bigint();
        const op = await cm("home-1").startVms({
          request_id: randomUUID(),
          image_digest: image.digest,
          datacenter: dc,
          count: c.count,
          machine_size: size,
        });
        const done = await waitForOperation(cm(dc), op, { timeoutMs: 900_000 });
        const vms = await cm(dc).listVms(op.id.replace(/^start-/, ""));
        await Promise.all(vms.map((v) => fetch(`http://${v.addresses[0].address}/`).then((r) => r.text())));
        const total = seconds(t);
        const stop = await cm(dc).stopVms(randomUUID(), op.id.replace(/^start-/, ""));
        await waitForOperation(cm(dc), stop, { timeoutMs: 300_000 });
        return { total, transfer: done.start_vms?.transfer?.seconds ?? 0 };
      };
      const boot = (await run("home-1")).total;
      let t = process.hrtime.bigint();
      const rep = await cm("home-1").replicateImage(randomUUID(), image.digest, `copy-${i}`);
      await waitForOperation(cm(`copy-${i}`), rep, { timeoutMs: 600_000 });
      const transfer = seconds(t);
      t = process.hrtime.bigint();
      const both = await run(`fresh-${i}`);
      console.log(
        JSON.stringify({
          bench: "boot",
          kind: c.kind,
          count: c.count,
          imageBytes: image.sizeBytes,
          bootSeconds: +boot.toFixed(2),
          transferSeconds: +transfer.toFixed(2),
          totalSeconds: +both.total.toFixed(2),
          totalTransferPart: +both.transfer.toFixed(2),
          totalBootPart: +(both.total - both.transfer).toFixed(2),
          baseline: "boot where the image is + transfer alone + 1 s",
          baselineSeconds: +(boot + transfer + 1).toFixed(2),
          met: both.total <= boot + transfer + 1,
        }),
      );
    }
  } finally {
    for (const c of clients.values()) c.close();
    await stopWorld(world.dir);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Repacks an image with random padding up to 100 MiB, as the benchmark's image size. */
async function padImage(
  tmp: string,
  archive: string,
  name: string,
): Promise<{ file: string; digest: string; sizeBytes: number }> {
  const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
  const { extractImage } = await import("../../provider/image");
  const info = await extractImage(archive, path.join(dir, "root"));
  fs.rmSync(path.join(dir, "root", "manifest.json"), { force: true });
  const target = 100 * 1024 * 1024;
  randomFile(path.join(dir, "root", "padding.bin"), Math.max(1, target - info.sizeBytes));
  const file = path.join(tmp, `${name}-100m.tar`);
  const packed = await packDirectory(path.join(dir, "root"), info.manifest, file);
  fs.rmSync(dir, { recursive: true, force: true });
  return { file, ...packed };
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
