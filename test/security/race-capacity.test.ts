/**
 * Issue 10, item 7.3: the capacity check and the group insert are one catalog transaction,
 * so concurrent StartVms (and ScaleVms) against a small datacenter never overcommit it, on
 * either catalog engine.
 */

import { randomUUID } from "crypto";
import { Catalog } from "../../provider/catalog";
import { waitForOperation } from "../../provider/common/client";
import { GciError } from "../../provider/common/errors";
import { EtcdCluster, startEtcdCluster } from "../support/etcd";
import { processImage } from "../support/guest";
import { testWorld, TestWorld } from "../support/world";
import { push, startGroup } from "./crash-support";

const VCPUS = 3;
const STARTS = 12;

/** vCPUs the catalog's groups of `dc` hold. */
async function used(catalog: Catalog, dc: string): Promise<number> {
  return (await catalog.listVmGroups(dc)).reduce((sum, g) => sum + g.vcpus * g.count, 0);
}

/** The codes of the settled calls that failed, and how many succeeded. */
function outcome(results: PromiseSettledResult<unknown>[]): { ok: number; refused: string[] } {
  return {
    ok: results.filter((r) => r.status === "fulfilled").length,
    refused: [
      ...new Set(
        results
          .filter((r): r is PromiseRejectedResult => r.status === "rejected")
          .map((r) => (GciError.isInstance(r.reason) ? r.reason.code : String(r.reason))),
      ),
    ],
  };
}

describe.each([["sqlite"], ["etcd"]])("race: concurrent starts on a %s catalog", (engine) => {
  let etcd: EtcdCluster | undefined;
  let world: TestWorld;
  let digest: string;
  let catalog: Catalog;

  beforeAll(async () => {
    if (engine === "etcd") etcd = await startEtcdCluster({ members: 1 });
    world = await testWorld({
      regions: { r: ["r-1"] },
      vcpus: VCPUS,
      memoryMiB: 4096,
      ...(etcd ? { catalog: `etcd://${etcd.endpoints.join(",")}/race-${process.pid}/` } : {}),
    });
    digest = await push(world, "r-1", (await processImage()).file);
    catalog = await world.catalog();
  }, 120_000);

  afterAll(async () => {
    await catalog?.close();
    await world?.stop();
    await etcd?.stop();
  });

  afterEach(async () => {
    const client = world.client("r-1");
    for (const g of await catalog.listVmGroups("r-1")) {
      await waitForOperation(client, await client.stopVms(randomUUID(), g.requestId), { timeoutMs: 60_000 });
    }
  });

  it(`${STARTS} concurrent StartVms of 1 vCPU each into ${VCPUS} vCPUs: exactly ${VCPUS} are accepted`, async () => {
    const client = world.client("r-1");
    const results = await Promise.allSettled(
      Array.from({ length: STARTS }, () =>
        client.startVms({
          request_id: randomUUID(),
          image_digest: digest,
          datacenter: "r-1",
          count: 1,
          machine_size: "nano",
        }),
      ),
    );
    expect({ ...outcome(results), used: await used(catalog, "r-1") }).toEqual({
      ok: VCPUS,
      refused: ["RESOURCE_EXHAUSTED"],
      used: VCPUS,
    });
  }, 120_000);

  it("concurrent ScaleVms of two groups cannot together exceed the datacenter", async () => {
    const a = randomUUID();
    const b = randomUUID();
    await startGroup(world, "r-1", digest, 1, a);
    await startGroup(world, "r-1", digest, 1, b);
    const client = world.client("r-1");
    // Each alone fits (1 + 2 of 3 vCPUs); both together would need 4.
    const results = await Promise.allSettled([
      client.scaleVms(randomUUID(), a, 2),
      client.scaleVms(randomUUID(), b, 2),
    ]);
    expect({ ...outcome(results), used: await used(catalog, "r-1") }).toEqual({
      ok: 1,
      refused: ["RESOURCE_EXHAUSTED"],
      used: VCPUS,
    });
  }, 120_000);
});
