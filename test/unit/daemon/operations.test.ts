import { GciError } from "../../../provider/common/errors";
import { Operations } from "../../../provider/cluster/operations";

describe("the operations registry", () => {
  afterEach(() => jest.restoreAllMocks());

  const codeOf = (fn: () => unknown): string | undefined => {
    try {
      fn();
      return undefined;
    } catch (e) {
      return GciError.isInstance(e) ? e.code : String(e);
    }
  };

  it("keeps the newest finished operations up to its count, and every running one", () => {
    const ops = new Operations("dc-1", { maxDone: 3, doneTtlMs: 60_000 });
    ops.begin("running", "start_vms");
    for (let i = 0; i < 5; i++) {
      ops.begin(`op-${i}`, "start_vms");
      ops.finish(`op-${i}`);
    }
    ops.begin("next", "start_vms");
    expect(ops.list(true).map((o) => o.id)).toEqual(["running", "op-2", "op-3", "op-4", "next"]);
    expect(codeOf(() => ops.get("op-0"))).toBe("NOT_FOUND");
    // A repeat of a pruned request starts afresh; one still kept finds its operation.
    expect(ops.begin("op-0", "start_vms").created).toBe(true);
    expect(ops.begin("op-4", "start_vms").created).toBe(false);
  });

  it("drops finished operations past their time, not running ones", () => {
    let now = 1_000_000;
    jest.spyOn(Date, "now").mockImplementation(() => now);
    const ops = new Operations("dc-1", { maxDone: 100, doneTtlMs: 1000 });
    ops.begin("old", "replicate");
    ops.finish("old");
    ops.begin("slow", "replicate");
    now += 120_000;
    ops.begin("new", "replicate");
    expect(ops.list(true).map((o) => o.id)).toEqual(["slow", "new"]);
  });
});
