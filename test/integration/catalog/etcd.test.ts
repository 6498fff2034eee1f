/**
 * The catalog suite on a real three-member etcd cluster: once healthy, once more with the
 * leader killed (a crash, so the others must elect a new one), then the member's return.
 */

import { EtcdCatalog } from "../../../provider/catalog";
import { EtcdCluster, startEtcdCluster } from "../../support/etcd";
import { describeCatalog } from "./catalog.suite";

let cluster: EtcdCluster;
const run = `/gci-test-${process.pid}-${Date.now()}`;

beforeAll(async () => {
  cluster = await startEtcdCluster();
});

afterAll(async () => {
  await cluster?.stop();
});

// Every client knows all three endpoints, as a real deployment's would.
describeCatalog(
  "EtcdCatalog, 3 healthy members",
  async (store) => new EtcdCatalog({ endpoints: cluster.endpoints, prefix: `${run}/healthy/${store}/` }),
);

describe("EtcdCatalog, leader killed", () => {
  let killed = -1;
  let writer: EtcdCatalog;

  beforeAll(async () => {
    killed = await cluster.leader();
    await cluster.stopMember(killed, "SIGKILL");
    writer = new EtcdCatalog({ endpoints: cluster.endpoints, prefix: `${run}/catchup/` });
  });

  afterAll(async () => {
    await writer?.close();
  });

  it("keeps answering, with a new leader among the other two", async () => {
    await writer.putRegion("written-while-down");
    const leader = await cluster.leader();
    expect(leader).not.toBe(killed);
  });

  describeCatalog(
    "suite with 2 of 3 members",
    async (store) => new EtcdCatalog({ endpoints: cluster.endpoints, prefix: `${run}/degraded/${store}/` }),
  );

  it("lets the killed member rejoin and catch up", async () => {
    await cluster.startMember(killed);
    // A client that can only reach the returning member sees what was written without it.
    const only = new EtcdCatalog({ endpoints: [cluster.endpoints[killed]], prefix: `${run}/catchup/` });
    try {
      expect(await only.listRegions()).toEqual(["written-while-down"]);
    } finally {
      await only.close();
    }
  });
});

describe("EtcdCatalog, no quorum", () => {
  it("fails with UNAVAILABLE naming the endpoints and the fix, within its timeout", async () => {
    const cat = new EtcdCatalog({
      endpoints: ["127.0.0.1:1"],
      prefix: `${run}/none/`,
      callTimeoutMs: 200,
      operationTimeoutMs: 500,
    });
    const started = Date.now();
    await expect(cat.listRegions()).rejects.toEqual(
      expect.objectContaining({ code: "UNAVAILABLE", message: expect.stringContaining("127.0.0.1:1") }),
    );
    expect(Date.now() - started).toBeLessThan(5000);
    await cat.close();
  });
});
