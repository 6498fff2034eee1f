/**
 * The one test suite every catalog engine passes. An engine's test file calls
 * describeCatalog with a factory that opens a client on a named store: the same name gives
 * the same data (so several clients can race on it), a new name an empty store.
 */

import type {
  Catalog,
  DatacenterRecord,
  ImageRecord,
  PlacementRecord,
  VmGroupRecord,
  VmRecord,
} from "../../../provider/catalog";

/** Opens a client on store `store`; each test uses a store name of its own. */
export type CatalogFactory = (store: string) => Promise<Catalog>;

/** A valid digest, distinct for each seed. */
export const digestOf = (seed: string): string => {
  let hex = "";
  for (const ch of seed) hex += ch.charCodeAt(0).toString(16).padStart(4, "0");
  return `sha256:${hex.padEnd(64, "0").slice(0, 64)}`;
};

const dc = (name: string, region: string, extra: Partial<DatacenterRecord> = {}): DatacenterRecord => ({
  name,
  region,
  endpoint: "127.0.0.1:50051",
  capacity: { vcpus: 8, memoryMiB: 16384 },
  heartbeatAt: 0,
  ...extra,
});

const image = (seed: string, extra: Partial<ImageRecord> = {}): ImageRecord => ({
  digest: digestOf(seed),
  name: `image-${seed}`,
  sizeBytes: 1024,
  owner: "platform",
  createdAt: 1_700_000_000_000,
  ...extra,
});

const placement = (
  seed: string,
  datacenter: string,
  extra: Partial<PlacementRecord> = {},
): PlacementRecord => ({
  digest: digestOf(seed),
  datacenter,
  state: "transferring",
  bytesDone: 0,
  bytesTotal: 1024,
  error: "",
  updatedAt: 1_700_000_000_000,
  ...extra,
});

const group = (requestId: string, extra: Partial<VmGroupRecord> = {}): VmGroupRecord => ({
  requestId,
  datacenter: "dc-a",
  digest: digestOf("img"),
  count: 3,
  vcpus: 1,
  memoryMiB: 256,
  createdAt: 1_700_000_000_000,
  ...extra,
});

const vm = (id: string, extra: Partial<VmRecord> = {}): VmRecord => ({
  id,
  requestId: "req-1",
  datacenter: "dc-a",
  digest: digestOf("img"),
  state: "provisioning",
  addresses: {},
  updatedAt: 1_700_000_000_000,
  ...extra,
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** An INVALID_ARGUMENT (or other code) GciError whose message quotes `value`. */
const gciError = (code: string, value?: string) =>
  expect.objectContaining({
    name: "GciError",
    code,
    ...(value === undefined ? {} : { message: expect.stringContaining(value) }),
  });

/** Registers the shared catalog tests under `name`. */
export function describeCatalog(name: string, factory: CatalogFactory): void {
  describe(name, () => {
    let counter = 0;
    let opened: Catalog[] = [];
    let store = "";
    let cat: Catalog;

    /** Another client on the current test's store. */
    const another = async (): Promise<Catalog> => {
      const c = await factory(store);
      opened.push(c);
      return c;
    };

    beforeEach(async () => {
      store = `s${process.pid}-${Date.now()}-${counter++}`;
      opened = [];
      cat = await another();
    });

    afterEach(async () => {
      await Promise.all(opened.map((c) => c.close()));
    });

    describe("regions", () => {
      it("puts idempotently and lists sorted", async () => {
        await cat.putRegion("region-2");
        await cat.putRegion("region-1");
        await cat.putRegion("region-2");
        expect(await cat.listRegions()).toEqual(["region-1", "region-2"]);
      });

      it("rejects a bad name, quoting it", async () => {
        await expect(cat.putRegion("bad/name")).rejects.toEqual(gciError("INVALID_ARGUMENT", '"bad/name"'));
        await expect(cat.putRegion("")).rejects.toEqual(gciError("INVALID_ARGUMENT"));
        expect(await cat.listRegions()).toEqual([]);
      });
    });

    describe("datacenters", () => {
      it("puts, gets and creates the region", async () => {
        await cat.putDatacenter(dc("dc-a", "eu"));
        expect(await cat.getDatacenter("dc-a")).toEqual(dc("dc-a", "eu"));
        expect(await cat.getDatacenter("dc-missing")).toBeUndefined();
        expect(await cat.listRegions()).toEqual(["eu"]);
      });

      it("replaces on a second put", async () => {
        await cat.putDatacenter(dc("dc-a", "eu"));
        const moved = dc("dc-a", "eu", { endpoint: "10.0.0.7:6000", capacity: { vcpus: 2, memoryMiB: 512 } });
        await cat.putDatacenter(moved);
        expect(await cat.getDatacenter("dc-a")).toEqual(moved);
        expect(await cat.listDatacenters()).toHaveLength(1);
      });

      it("lists all and by region", async () => {
        await cat.putDatacenter(dc("dc-c", "us"));
        await cat.putDatacenter(dc("dc-a", "eu"));
        await cat.putDatacenter(dc("dc-b", "eu"));
        expect((await cat.listDatacenters()).map((d) => d.name)).toEqual(["dc-a", "dc-b", "dc-c"]);
        expect((await cat.listDatacenters("eu")).map((d) => d.name)).toEqual(["dc-a", "dc-b"]);
        expect((await cat.listDatacenters("us")).map((d) => d.name)).toEqual(["dc-c"]);
        expect(await cat.listDatacenters("asia")).toEqual([]);
        expect(await cat.listRegions()).toEqual(["eu", "us"]);
      });

      it("deletes, idempotently", async () => {
        await cat.putDatacenter(dc("dc-a", "eu"));
        await cat.putDatacenter(dc("dc-b", "eu"));
        await cat.deleteDatacenter("dc-a");
        await cat.deleteDatacenter("dc-a");
        expect(await cat.getDatacenter("dc-a")).toBeUndefined();
        expect((await cat.listDatacenters()).map((d) => d.name)).toEqual(["dc-b"]);
      });

      it("records heartbeats, and refuses one from an unknown datacenter", async () => {
        await cat.putDatacenter(dc("dc-a", "eu"));
        await cat.heartbeat("dc-a", 1_700_000_000_123);
        expect(await cat.getDatacenter("dc-a")).toEqual(dc("dc-a", "eu", { heartbeatAt: 1_700_000_000_123 }));
        await expect(cat.heartbeat("dc-nope", 1)).rejects.toEqual(gciError("NOT_FOUND", '"dc-nope"'));
      });

      it("rejects bad records with the value and the fix", async () => {
        await expect(cat.putDatacenter(dc("dc-a", "eu", { endpoint: "nohost" }))).rejects.toEqual(
          gciError("INVALID_ARGUMENT", '"nohost"'),
        );
        await expect(
          cat.putDatacenter(dc("dc-a", "eu", { capacity: { vcpus: -1, memoryMiB: 1 } })),
        ).rejects.toEqual(gciError("INVALID_ARGUMENT", "-1"));
        await expect(cat.putDatacenter(dc("dc a", "eu"))).rejects.toEqual(
          gciError("INVALID_ARGUMENT", '"dc a"'),
        );
        expect(await cat.listDatacenters()).toEqual([]);
      });
    });

    describe("images", () => {
      it("puts, gets and lists", async () => {
        await cat.putImage(image("b"));
        await cat.putImage(image("a"));
        expect(await cat.getImage(digestOf("a"))).toEqual(image("a"));
        expect(await cat.getImage(digestOf("zz"))).toBeUndefined();
        expect((await cat.listImages()).map((i) => i.name)).toEqual(["image-a", "image-b"]);
      });

      it("keeps the first record of a digest", async () => {
        await cat.putImage(image("a", { name: "first" }));
        await cat.putImage(image("a", { name: "second", owner: "someone-else" }));
        expect(await cat.getImage(digestOf("a"))).toEqual(image("a", { name: "first" }));
        expect(await cat.listImages()).toHaveLength(1);
      });

      it("rejects a malformed digest, quoting it", async () => {
        await expect(cat.putImage(image("a", { digest: "sha256:xyz" }))).rejects.toEqual(
          gciError("INVALID_ARGUMENT", '"sha256:xyz"'),
        );
        await expect(cat.getImage("md5:1")).rejects.toEqual(gciError("INVALID_ARGUMENT", '"md5:1"'));
      });
    });

    describe("placements", () => {
      it("follows an image through transferring, failed and present", async () => {
        await cat.putPlacement(placement("a", "dc-b"));
        expect(await cat.getPlacement(digestOf("a"), "dc-b")).toEqual(placement("a", "dc-b"));

        const failed = placement("a", "dc-b", {
          state: "failed",
          bytesDone: 512,
          error: "chunk 3: sha256 mismatch",
        });
        await cat.putPlacement(failed);
        expect(await cat.getPlacement(digestOf("a"), "dc-b")).toEqual(failed);

        const present = placement("a", "dc-b", {
          state: "present",
          bytesDone: 1024,
          updatedAt: 1_700_000_000_999,
        });
        await cat.putPlacement(present);
        expect(await cat.getPlacement(digestOf("a"), "dc-b")).toEqual(present);
        expect(await cat.listPlacements(digestOf("a"))).toEqual([present]);
      });

      it("lists per digest and all", async () => {
        await cat.putPlacement(placement("a", "dc-b", { state: "present" }));
        await cat.putPlacement(placement("a", "dc-a", { state: "present" }));
        await cat.putPlacement(placement("b", "dc-a"));
        await cat.putPlacement(placement("a", "dc-a1"));
        expect((await cat.listPlacements(digestOf("a"))).map((p) => p.datacenter)).toEqual([
          "dc-a",
          "dc-a1",
          "dc-b",
        ]);
        expect((await cat.listPlacements(digestOf("b"))).map((p) => p.datacenter)).toEqual(["dc-a"]);
        expect(await cat.listPlacements(digestOf("c"))).toEqual([]);
        expect(
          (await cat.listPlacements()).map(
            (p) => `${p.digest === digestOf("a") ? "a" : "b"}@${p.datacenter}`,
          ),
        ).toEqual(["a@dc-a", "a@dc-a1", "a@dc-b", "b@dc-a"]);
        expect(await cat.getPlacement(digestOf("b"), "dc-b")).toBeUndefined();
      });

      it("deletes one placement", async () => {
        await cat.putPlacement(placement("a", "dc-a"));
        await cat.putPlacement(placement("a", "dc-b"));
        await cat.deletePlacement(digestOf("a"), "dc-a");
        await cat.deletePlacement(digestOf("a"), "dc-a");
        expect((await cat.listPlacements()).map((p) => p.datacenter)).toEqual(["dc-b"]);
      });

      it("deleteImage removes the image and all its placements, and nothing else", async () => {
        await cat.putImage(image("a"));
        await cat.putImage(image("b"));
        await cat.putPlacement(placement("a", "dc-a", { state: "present" }));
        await cat.putPlacement(placement("a", "dc-b"));
        await cat.putPlacement(placement("b", "dc-a", { state: "present" }));
        await cat.deleteImage(digestOf("a"));
        await cat.deleteImage(digestOf("a"));
        expect(await cat.getImage(digestOf("a"))).toBeUndefined();
        expect(await cat.listPlacements(digestOf("a"))).toEqual([]);
        expect(await cat.listPlacements()).toEqual([placement("b", "dc-a", { state: "present" })]);
        expect(await cat.listImages()).toEqual([image("b")]);
      });

      it("rejects an unknown state", async () => {
        await expect(
          cat.putPlacement(placement("a", "dc-a", { state: "lost" as PlacementRecord["state"] })),
        ).rejects.toEqual(gciError("INVALID_ARGUMENT", '"lost"'));
      });
    });

    describe("leases", () => {
      const D = digestOf("img");

      it("is taken when free and refused to a second holder", async () => {
        expect(await cat.getLease(D, "dc-a")).toBeUndefined();
        const before = Date.now();
        expect(await cat.acquireLease(D, "dc-a", "holder-1", 60_000)).toBe(true);
        const lease = await cat.getLease(D, "dc-a");
        expect(lease).toMatchObject({ digest: D, datacenter: "dc-a", holder: "holder-1" });
        expect(lease!.expiresAt).toBeGreaterThanOrEqual(before + 60_000);
        expect(await cat.acquireLease(D, "dc-a", "holder-2", 60_000)).toBe(false);
        expect((await cat.getLease(D, "dc-a"))!.holder).toBe("holder-1");
        // Leases are per (digest, datacenter).
        expect(await cat.acquireLease(D, "dc-b", "holder-2", 60_000)).toBe(true);
        expect(await cat.acquireLease(digestOf("other"), "dc-a", "holder-2", 60_000)).toBe(true);
      });

      it("is renewed by its holder", async () => {
        expect(await cat.acquireLease(D, "dc-a", "holder-1", 1_000)).toBe(true);
        const first = (await cat.getLease(D, "dc-a"))!.expiresAt;
        expect(await cat.acquireLease(D, "dc-a", "holder-1", 60_000)).toBe(true);
        const second = (await cat.getLease(D, "dc-a"))!.expiresAt;
        expect(second).toBeGreaterThan(first);
      });

      it("is taken over once expired", async () => {
        expect(await cat.acquireLease(D, "dc-a", "holder-1", 50)).toBe(true);
        await sleep(120);
        expect(await cat.getLease(D, "dc-a")).toBeUndefined();
        expect(await cat.acquireLease(D, "dc-a", "holder-2", 60_000)).toBe(true);
        expect((await cat.getLease(D, "dc-a"))!.holder).toBe("holder-2");
        expect(await cat.acquireLease(D, "dc-a", "holder-1", 60_000)).toBe(false);
      });

      it("is released only by its holder", async () => {
        expect(await cat.acquireLease(D, "dc-a", "holder-1", 60_000)).toBe(true);
        await cat.releaseLease(D, "dc-a", "holder-2");
        expect((await cat.getLease(D, "dc-a"))!.holder).toBe("holder-1");
        await cat.releaseLease(D, "dc-a", "holder-1");
        expect(await cat.getLease(D, "dc-a")).toBeUndefined();
        await cat.releaseLease(D, "dc-a", "holder-1");
        expect(await cat.acquireLease(D, "dc-a", "holder-2", 60_000)).toBe(true);
      });

      it("goes to exactly one of 10 concurrent holders on separate clients", async () => {
        const clients = [cat, ...(await Promise.all(Array.from({ length: 4 }, another)))];
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            clients[i % clients.length].acquireLease(D, "dc-a", `h${i}`, 60_000),
          ),
        );
        expect(results.filter((r) => r)).toHaveLength(1);
        const winner = results.indexOf(true);
        expect((await cat.getLease(D, "dc-a"))!.holder).toBe(`h${winner}`);
      });

      it("goes to exactly one of 10 concurrent holders when it has expired", async () => {
        expect(await cat.acquireLease(D, "dc-a", "old", 30)).toBe(true);
        await sleep(80);
        const clients = [cat, ...(await Promise.all(Array.from({ length: 4 }, another)))];
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            clients[i % clients.length].acquireLease(D, "dc-a", `h${i}`, 60_000),
          ),
        );
        expect(results.filter((r) => r)).toHaveLength(1);
      });

      it("rejects a non-positive ttl", async () => {
        await expect(cat.acquireLease(D, "dc-a", "holder-1", 0)).rejects.toEqual(
          gciError("INVALID_ARGUMENT", "ttlMs"),
        );
        await expect(cat.acquireLease(D, "dc-a", "", 10)).rejects.toEqual(
          gciError("INVALID_ARGUMENT", "holder"),
        );
      });
    });

    describe("VM groups", () => {
      it("stores the first group of a request id and returns it on a repeat", async () => {
        expect(await cat.putVmGroupIfAbsent(group("req-1"))).toEqual(group("req-1"));
        expect(await cat.putVmGroupIfAbsent(group("req-1", { count: 9 }))).toEqual(group("req-1"));
        expect(await cat.getVmGroup("req-1")).toEqual(group("req-1"));
        expect(await cat.getVmGroup("req-2")).toBeUndefined();
      });

      it("stores one group when repeats race on separate clients", async () => {
        const clients = [cat, ...(await Promise.all(Array.from({ length: 4 }, another)))];
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            clients[i % clients.length].putVmGroupIfAbsent(group("req-race", { count: i + 1 })),
          ),
        );
        const stored = await cat.getVmGroup("req-race");
        expect(stored).toBeDefined();
        for (const r of results) expect(r).toEqual(stored);
        expect(await cat.listVmGroups()).toHaveLength(1);
      });

      it("lists all and by datacenter, and deletes", async () => {
        await cat.putVmGroupIfAbsent(group("req-b", { datacenter: "dc-b" }));
        await cat.putVmGroupIfAbsent(group("req-a"));
        await cat.putVmGroupIfAbsent(group("req-c"));
        expect((await cat.listVmGroups()).map((g) => g.requestId)).toEqual(["req-a", "req-b", "req-c"]);
        expect((await cat.listVmGroups("dc-a")).map((g) => g.requestId)).toEqual(["req-a", "req-c"]);
        await cat.deleteVmGroup("req-a");
        await cat.deleteVmGroup("req-a");
        expect((await cat.listVmGroups("dc-a")).map((g) => g.requestId)).toEqual(["req-c"]);
        expect(await cat.getVmGroup("req-a")).toBeUndefined();
      });

      it("accepts request ids with slashes and colons (URNs)", async () => {
        const id = "urn:pulumi:dev::app::pulumi-nodejs:dynamic/gci:VirtualMachineGroup::web";
        await cat.putVmGroupIfAbsent(group(id));
        await cat.putVmGroupIfAbsent(group(`${id}/x`));
        expect(await cat.getVmGroup(id)).toEqual(group(id));
        expect(await cat.listVmGroups()).toHaveLength(2);
      });
    });

    describe("VM groups within capacity (createVmGroup, updateVmGroup)", () => {
      // dc-a holds 8 vCPUs and 16384 MiB; each of these groups takes 2 vCPUs and 256 MiB.
      const two = (requestId: string, extra: Partial<VmGroupRecord> = {}) =>
        group(requestId, { count: 1, vcpus: 2, ...extra });

      beforeEach(async () => {
        await cat.putDatacenter(dc("dc-a", "eu"));
      });

      it("creates a group that fits, and returns the stored one on a repeat", async () => {
        expect(await cat.createVmGroup(two("req-1"))).toEqual({ group: two("req-1"), created: true });
        expect(await cat.createVmGroup(two("req-1", { count: 3, createdAt: 1 }))).toEqual({
          group: two("req-1"),
          created: false,
        });
        expect(await cat.listVmGroups("dc-a")).toEqual([two("req-1")]);
      });

      it("refuses a group that does not fit, saying what is free, and an unknown datacenter", async () => {
        await cat.createVmGroup(two("req-1", { count: 3 }));
        await expect(cat.createVmGroup(two("req-2", { count: 2 }))).rejects.toEqual(
          gciError("RESOURCE_EXHAUSTED", "2 of 8 vCPUs"),
        );
        await expect(cat.createVmGroup(two("req-3", { datacenter: "dc-nope" }))).rejects.toEqual(
          gciError("NOT_FOUND", '"dc-nope"'),
        );
        expect((await cat.listVmGroups()).map((g) => g.requestId)).toEqual(["req-1"]);
      });

      it("never overcommits when 10 creates race on separate clients", async () => {
        const clients = [cat, ...(await Promise.all(Array.from({ length: 4 }, another)))];
        const results = await Promise.allSettled(
          Array.from({ length: 10 }, (_, i) => clients[i % clients.length].createVmGroup(two(`req-${i}`))),
        );
        const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
        expect(refused.map((r) => (r.reason as { code: string }).code)).toEqual(
          Array(6).fill("RESOURCE_EXHAUSTED"),
        );
        expect(await cat.listVmGroups("dc-a")).toHaveLength(4);
      });

      it("updates only the group the caller read (compare-and-swap)", async () => {
        await cat.createVmGroup(two("req-1"));
        expect(await cat.updateVmGroup(two("req-1"), two("req-1", { count: 2 }))).toBe(true);
        expect(await cat.getVmGroup("req-1")).toEqual(two("req-1", { count: 2 }));
        // A stale read loses; a retried update that already happened reads as done.
        expect(await cat.updateVmGroup(two("req-1"), two("req-1", { count: 3 }))).toBe(false);
        expect(await cat.updateVmGroup(two("req-1"), two("req-1", { count: 2 }))).toBe(true);
        expect(await cat.updateVmGroup(two("req-gone"), two("req-gone", { count: 2 }))).toBe(false);
        expect(await cat.getVmGroup("req-gone")).toBeUndefined();
        expect(await cat.getVmGroup("req-1")).toEqual(two("req-1", { count: 2 }));
      });

      it("refuses an update that grows past the capacity, and one that changes the group's identity", async () => {
        await cat.createVmGroup(two("req-1"));
        await cat.createVmGroup(two("req-2", { count: 2 }));
        await expect(cat.updateVmGroup(two("req-1"), two("req-1", { count: 3 }))).rejects.toEqual(
          gciError("RESOURCE_EXHAUSTED", "dc-a"),
        );
        await expect(cat.updateVmGroup(two("req-1"), two("req-1", { datacenter: "dc-b" }))).rejects.toEqual(
          gciError("INVALID_ARGUMENT", "dc-b"),
        );
        expect(await cat.updateVmGroup(two("req-1"), two("req-1", { count: 2 }))).toBe(true);
        expect(await cat.updateVmGroup(two("req-2", { count: 2 }), two("req-2", { count: 1 }))).toBe(true);
      });

      it("lets one of 10 racing updates from the same read win, and growths never overcommit", async () => {
        await cat.createVmGroup(two("req-1"));
        await cat.createVmGroup(two("req-2"));
        const clients = [cat, ...(await Promise.all(Array.from({ length: 4 }, another)))];
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            clients[i % clients.length].updateVmGroup(two("req-1"), two("req-1", { count: 1, createdAt: i })),
          ),
        );
        expect(results.filter((r) => r)).toHaveLength(1);
        // req-1 and req-2 each grow to 3 (6 vCPUs each): only one fits beside the other.
        const [a, b] = await Promise.all([cat.getVmGroup("req-1"), cat.getVmGroup("req-2")]);
        const grown = await Promise.allSettled([
          clients[1].updateVmGroup(a!, { ...a!, count: 3 }),
          clients[2].updateVmGroup(b!, { ...b!, count: 3 }),
        ]);
        expect(grown.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
        const used = (await cat.listVmGroups("dc-a")).reduce((sum, g) => sum + g.vcpus * g.count, 0);
        expect(used).toBe(8);
      });
    });

    describe("image claims", () => {
      const ref = (datacenter: string, holder: string, seed = "a") => ({
        digest: digestOf(seed),
        datacenter,
        holder,
        createdAt: 1_700_000_000_000,
      });

      it("puts idempotently, lists per digest sorted, and deletes only the holder's own", async () => {
        const urn = "urn:pulumi:dev::app::pulumi-nodejs:dynamic/gci:Image::web";
        await cat.putImageRef(ref("dc-b", urn));
        await cat.putImageRef(ref("dc-a", "stack-b"));
        await cat.putImageRef(ref("dc-a", urn));
        await cat.putImageRef(ref("dc-a", urn));
        await cat.putImageRef(ref("dc-a", urn, "other"));
        expect(await cat.listImageRefs(digestOf("a"))).toEqual([
          ref("dc-a", "stack-b"),
          ref("dc-a", urn),
          ref("dc-b", urn),
        ]);
        await cat.deleteImageRef(digestOf("a"), "dc-a", urn);
        await cat.deleteImageRef(digestOf("a"), "dc-a", urn);
        expect(await cat.listImageRefs(digestOf("a"))).toEqual([ref("dc-a", "stack-b"), ref("dc-b", urn)]);
        expect(await cat.listImageRefs(digestOf("other"))).toEqual([ref("dc-a", urn, "other")]);
      });

      it("rejects an empty holder or a bad datacenter, quoting it", async () => {
        await expect(cat.putImageRef(ref("dc-a", ""))).rejects.toEqual(
          gciError("INVALID_ARGUMENT", "holder"),
        );
        await expect(cat.putImageRef(ref("dc a", "h"))).rejects.toEqual(
          gciError("INVALID_ARGUMENT", '"dc a"'),
        );
        expect(await cat.listImageRefs(digestOf("a"))).toEqual([]);
      });
    });

    describe("VMs", () => {
      it("puts, replaces, gets and deletes", async () => {
        await cat.putVm(vm("vm-0123456789-1"));
        expect(await cat.getVm("vm-0123456789-1")).toEqual(vm("vm-0123456789-1"));
        const running = vm("vm-0123456789-1", {
          state: "running",
          addresses: { "80": "127.0.0.1:40080" },
          updatedAt: 1_700_000_001_000,
        });
        await cat.putVm(running);
        expect(await cat.getVm("vm-0123456789-1")).toEqual(running);
        await cat.deleteVm("vm-0123456789-1");
        await cat.deleteVm("vm-0123456789-1");
        expect(await cat.getVm("vm-0123456789-1")).toBeUndefined();
      });

      it("lists with filters", async () => {
        await cat.putVm(vm("vm-0123456789-3", { datacenter: "dc-b", requestId: "req-2" }));
        await cat.putVm(vm("vm-0123456789-1"));
        await cat.putVm(vm("vm-0123456789-2", { requestId: "req-2" }));
        const ids = (vms: VmRecord[]): string[] => vms.map((v) => v.id);
        expect(ids(await cat.listVms())).toEqual(["vm-0123456789-1", "vm-0123456789-2", "vm-0123456789-3"]);
        expect(ids(await cat.listVms({}))).toEqual(["vm-0123456789-1", "vm-0123456789-2", "vm-0123456789-3"]);
        expect(ids(await cat.listVms({ datacenter: "dc-a" }))).toEqual([
          "vm-0123456789-1",
          "vm-0123456789-2",
        ]);
        expect(ids(await cat.listVms({ requestId: "req-2" }))).toEqual([
          "vm-0123456789-2",
          "vm-0123456789-3",
        ]);
        expect(ids(await cat.listVms({ datacenter: "dc-b", requestId: "req-2" }))).toEqual([
          "vm-0123456789-3",
        ]);
        expect(ids(await cat.listVms({ datacenter: "dc-c" }))).toEqual([]);
      });

      it("rejects an unknown state", async () => {
        await expect(
          cat.putVm(vm("vm-0123456789-1", { state: "zombie" as VmRecord["state"] })),
        ).rejects.toEqual(gciError("INVALID_ARGUMENT", '"zombie"'));
      });
    });

    describe("clients", () => {
      it("see each other's writes", async () => {
        const other = await another();
        await cat.putDatacenter(dc("dc-a", "eu"));
        expect(await other.getDatacenter("dc-a")).toEqual(dc("dc-a", "eu"));
      });

      it("fail with FAILED_PRECONDITION once closed", async () => {
        const c = await another();
        await c.close();
        await expect(c.listRegions()).rejects.toEqual(gciError("FAILED_PRECONDITION", "closed"));
      });
    });
  });
}
