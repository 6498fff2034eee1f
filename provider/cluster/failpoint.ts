/**
 * Fail points: named steps of the cluster manager where a test can make it die or fail on
 * purpose, to prove that a crash or an error at exactly that step leaves the catalog and the
 * host consistent (the technique of etcd's gofail and CockroachDB's testing knobs).
 *
 * The test sets GCI_FAILPOINT before it starts the daemon; it is read once, when this module
 * is loaded (at daemon start). Forms:
 *   GCI_FAILPOINT=<name>          the process kills itself with SIGKILL at that step: no
 *                                 handler, no clean-up, exactly like `kill -9` (exit 137)
 *   GCI_FAILPOINT=<name>=error    the step throws an INTERNAL GciError instead
 * Unset (every real deployment), `failpoint()` does nothing.
 *
 * The names, and the step each marks:
 *   scale.record          ScaleVms, as it records the group's new count
 *   delete-image.between  DeleteImage, between its two steps (the placement, the stored bytes)
 *   instance.start        an instance is about to be started (converge)
 *   start.accepted        StartVms, right after the group is recorded and start.accepted logged,
 *                         before its work (transfer, boot) begins
 */

import * as fs from "fs";
import { GciError } from "../common/errors";

/** The names above; a typo in a call site is a compile error. */
export type FailpointName = "scale.record" | "delete-image.between" | "instance.start" | "start.accepted";

interface Armed {
  readonly name: string;
  readonly action: "kill" | "error";
}

const armed: Armed | undefined = parse(process.env.GCI_FAILPOINT);

function parse(value: string | undefined): Armed | undefined {
  if (value === undefined || value === "") return undefined;
  const [name, action] = value.split("=", 2);
  return { name, action: action === "error" ? "error" : "kill" };
}

/** Dies or throws here when GCI_FAILPOINT names this step; otherwise does nothing. */
export function failpoint(name: FailpointName): void {
  if (armed === undefined || armed.name !== name) return;
  // Written synchronously, so the line is in the log before the process is gone.
  fs.writeSync(
    2,
    `${JSON.stringify({ ts: new Date().toISOString(), level: "warn", event: "failpoint.hit", name, action: armed.action })}\n`,
  );
  if (armed.action === "error") {
    throw new GciError("INTERNAL", `fail point "${name}" (GCI_FAILPOINT) failed this step on purpose`);
  }
  process.kill(process.pid, "SIGKILL");
}
