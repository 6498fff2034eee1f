import { runGci } from "../support/engine";

/** Numeric flags are checked by the CLI itself: a bad value is named with its range before anything runs. */
describe("gci numeric flags", () => {
  it.each([
    [
      ["vm", "start", "--image", "x", "--region", "eu", "--count", "-3"],
      "'--count <n>' argument '-3'",
      "1 to 1000",
    ],
    [
      ["vm", "start", "--image", "x", "--region", "eu", "--count", "2.5"],
      "'--count <n>' argument '2.5'",
      "1 to 1000",
    ],
    [
      ["vm", "start", "--image", "x", "--region", "eu", "--timeout", "0"],
      "'--timeout <seconds>' argument '0'",
      "1 to 86400",
    ],
    [
      ["image", "build", "/tmp", "-o", "/tmp/never.tar", "--port", "99999"],
      "'--port <n...>' argument '99999'",
      "1 to 65535",
    ],
    [
      ["world", "up", "--max-transfer-rate", "fast"],
      "'--max-transfer-rate <bytes>' argument 'fast'",
      "whole number",
    ],
  ])("gci %j is refused, naming the flag, the value and the range", async (args, flag, range) => {
    const run = await runGci(args, 30_000);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(flag);
    expect(run.stderr).toContain(range);
  });
});
