/**
 * A child process for the SQLite multi-process test: opens the catalog file, says "ready",
 * waits for "go" on stdin, then races the other children, round by round, for leases and VM groups, and
 * prints what it won as one JSON line. Run with `node -r tsx/cjs sqlite-racer.ts <file> <holder> <n>`.
 */

import { SqliteCatalog } from "../../../provider/catalog";
import { digestOf } from "./catalog.suite";

const SLOT_MS = 10;

async function main(): Promise<void> {
  const [file, holder, n] = process.argv.slice(2);
  const rounds = Number(n);
  const cat = new SqliteCatalog({ path: file });
  process.stdout.write("ready\n");
  // "go <t0>": round k starts at wall-clock time t0 + k * SLOT_MS in every child, so each
  // round is a real race between processes rather than one child sweeping ahead.
  const t0 = await new Promise<number>((resolve) =>
    process.stdin.once("data", (d: Buffer) => resolve(Number(d.toString().trim().split(" ")[1]))),
  );
  process.stdin.destroy();
  const won: number[] = [];
  const groups: number[] = [];
  for (let k = 0; k < rounds; k++) {
    const wait = t0 + k * SLOT_MS - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (await cat.acquireLease(digestOf(`race-${k}`), "dc-a", holder, 60_000)) won.push(k);
    const g = await cat.putVmGroupIfAbsent({
      requestId: `race-${k}`,
      datacenter: "dc-a",
      digest: digestOf("img"),
      count: Number(holder.replace(/\D/g, "")) + 1,
      vcpus: 1,
      memoryMiB: 64,
      createdAt: Date.now(),
    });
    groups.push(g.count);
  }
  await cat.close();
  process.stdout.write(`${JSON.stringify({ holder, won, groups })}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
