import { derivedRequestId, nextGeneration } from "../../../provider/pulumi/dynamic/keys";

describe("idempotency keys", () => {
  const key = "app/dev/gci:VirtualMachineGroup//web-eu";

  it("are the same for the same resource and generation (a retried up finds its request)", () => {
    expect(derivedRequestId("vmg", key, 0)).toBe(derivedRequestId("vmg", key, 0));
    expect(derivedRequestId("vmg", key, 0)).toMatch(/^vmg-[0-9a-f]{16}$/);
  });

  it("differ for a replacement, another resource, and a retry after a spent id", () => {
    const ids = new Set([
      derivedRequestId("vmg", key, 0),
      derivedRequestId("vmg", key, 1),
      derivedRequestId("vmg", "app/dev/gci:VirtualMachineGroup//web-ap", 0),
      derivedRequestId("vmg", key, 0, 1),
    ]);
    expect(ids.size).toBe(4);
  });

  it("count generations: 0 when new, kept in place, one more per replacement", () => {
    expect(nextGeneration(undefined, [])).toBe(0);
    expect(nextGeneration({}, ["image"])).toBe(0);
    expect(nextGeneration({ generation: 3 }, [])).toBe(3);
    expect(nextGeneration({ generation: 3 }, ["image", "machineSize"])).toBe(4);
  });
});
