import { runSoak } from "./soak";

/**
 * The short form of the soak (npm run soak -- --rounds N is the long one): one round of each
 * of four fault kinds, each recovered as an operator would and checked from outside; any
 * violation fails the test, with the round's line saying which and how to replay it.
 */
describe("soak, short form", () => {
  it("finds no violation in 4 rounds: receiver kill, sender kill, supervisor kill, concurrent starts", async () => {
    const lines: string[] = [];
    const summary = await runSoak({
      rounds: 4,
      seed: 11,
      catalog: "sqlite",
      imageMiB: 32,
      rateBytes: 16 * 1024 * 1024,
      faults: ["receiver-kill", "sender-kill", "supervisor-kill", "concurrent-start"],
      log: (l) => lines.push(l),
    });
    const report = `${lines.join("\n")}\n${JSON.stringify(summary)}`;
    expect({ violations: summary.violations, report }).toEqual({ violations: 0, report });
  }, 180_000);
});
