import { randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Etcd3 } from "etcd3";
import { ETCD_DEFAULT_PREFIX } from "../../provider/catalog";
import { waitForOperation } from "../../provider/common/client";
import { runGci } from "../support/engine";
import { EtcdCluster, startEtcdCluster } from "../support/etcd";
import { processesMentioning } from "../support/procs";
import { testWorld, TestWorld, until } from "../support/world";

/**
 * The same attack as ids-paths.test.ts on the other catalog engine: a world whose catalog is a
 * real etcd cluster, and records written straight into etcd (anyone who reaches its client port
 * can). Ids read back become paths of a root daemon: they are checked on this engine too.
 */
describe("ids that become paths, etcd catalog", () => {
  let etcd: EtcdCluster;
  let world: TestWorld;
  let tmp: string;
  let raw: Etcd3;
  const digest = `sha256:${"ab".repeat(32)}`;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-sec-etcd-"));
    etcd = await startEtcdCluster({ members: 1 });
    world = await testWorld({ regions: { eu: ["eu-1"] }, catalog: `etcd://${etcd.endpoints[0]}` });
    raw = new Etcd3({ hosts: `http://${etcd.endpoints[0]}` });
  }, 120_000);

  afterAll(async () => {
    raw?.close();
    await world?.stop();
    await etcd?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** What an attacker who reaches etcd does: a record straight under the catalog's prefix. */
  async function forge(key: string, value: object): Promise<void> {
    await raw.put(`${ETCD_DEFAULT_PREFIX}${key}`).value(JSON.stringify(value));
  }

  async function forgeVm(id: string, requestId: string): Promise<void> {
    await forge(`vms/${encodeURIComponent(id)}`, {
      id,
      requestId,
      datacenter: "eu-1",
      digest,
      state: "running",
      addresses: {},
      updatedAt: 0,
    });
  }

  function canary(name: string): { dir: string; file: string } {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "canary.txt"), name);
    return { dir, file: path.join(dir, "canary.txt") };
  }

  const climbingId = (target: string): string =>
    path.relative(path.join(world.dc("eu-1").dataDir, "instances"), target);

  it("StopVms of a forged group whose VM id climbs out of the run folder leaves the canary alone", async () => {
    const c = canary("stop");
    await forge("vmgroups/forged-stop", {
      requestId: "forged-stop",
      datacenter: "eu-1",
      digest,
      count: 1,
      vcpus: 1,
      memoryMiB: 256,
      createdAt: 0,
    });
    await forgeVm(climbingId(c.dir), "forged-stop");
    const client = world.client("eu-1");
    const op = await client.stopVms(randomUUID(), "forged-stop");
    await waitForOperation(client, op, { timeoutMs: 30_000 });
    expect(fs.existsSync(c.file)).toBe(true);
  });

  it("a forged record read back is DATA_LOSS naming it", async () => {
    await forgeVm("proc-abcdefabcd-1", "../../forged");
    await expect(world.client("eu-1").getVm("proc-abcdefabcd-1")).rejects.toMatchObject({
      code: "DATA_LOSS",
      message: expect.stringContaining('VM "proc-abcdefabcd-1"'),
    });
  });

  it("gci world down with a forged VM whose id climbs out of the run folder leaves the canary alone", async () => {
    const c = canary("down");
    await forgeVm(climbingId(c.dir), "forged-down");
    const down = await runGci(["world", "down", "--world", world.dir]);
    expect(down.code).toBe(0);
    await until(
      () => processesMentioning(world.dir).length === 0,
      30_000,
      "the world's cluster managers to end",
    );
    expect(fs.existsSync(c.file)).toBe(true);
  });
});
