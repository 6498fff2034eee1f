import { reviveDelay } from "../../../provider/cluster/instances";

describe("reviveDelay (the watchdog's backoff)", () => {
  it("restarts a first death at once, then waits 1 s doubling, at most a minute", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 20].map(reviveDelay)).toEqual([
      0, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000,
    ]);
  });
});
