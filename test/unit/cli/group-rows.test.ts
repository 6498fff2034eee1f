import type { DatacenterRecord, VmGroupRecord, VmRecord, VmState } from "../../../provider/catalog";
import { groupRows } from "../../../provider/cli/vm";

const NOW = 1_000_000;

function group(requestId: string, count: number): VmGroupRecord {
  return {
    requestId,
    datacenter: "r-1",
    digest: `sha256:${"a".repeat(64)}`,
    count,
    vcpus: 1,
    memoryMiB: 128,
    createdAt: 1,
  };
}

function vm(requestId: string, index: number, state: VmState): VmRecord {
  return {
    id: `proc-0123456789-${index}`,
    requestId,
    datacenter: "r-1",
    digest: `sha256:${"a".repeat(64)}`,
    state,
    addresses: {},
    updatedAt: 1,
  };
}

const dc = (heartbeatAt: number): DatacenterRecord => ({
  name: "r-1",
  region: "r",
  endpoint: "127.0.0.1:1",
  capacity: { vcpus: 16, memoryMiB: 32768 },
  heartbeatAt,
});

describe("groupRows (gci vm ls)", () => {
  it("lists a group with no VM, with what runs of its count and its state", () => {
    const vms = [vm("b", 0, "running"), vm("b", 1, "failed"), vm("c", 0, "running"), vm("d", 0, "booting")];
    const rows = groupRows(
      [group("a", 2), group("b", 2), group("c", 1), group("d", 1)],
      vms,
      [dc(NOW - 1000)],
      NOW,
    );
    expect(rows.map((r) => [r.requestId, `${r.running}/${r.count}`, r.state, r.managerAnswering])).toEqual([
      ["a", "0/2", "not started", true],
      ["b", "1/2", "degraded", true],
      ["c", "1/1", "running", true],
      ["d", "0/1", "starting", true],
    ]);
  });

  it("says when the group's cluster manager has stopped writing its heartbeat", () => {
    const rows = groupRows([group("a", 2)], [vm("a", 0, "failed")], [dc(NOW - 60_000)], NOW);
    expect(rows).toEqual([
      expect.objectContaining({ requestId: "a", state: "down", managerAnswering: false }),
    ]);
  });
});
