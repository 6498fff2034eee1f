import { Command } from "commander";
import { restartDatacenter, requireWorld, worldDir } from "../world";
import { wholeNumber } from "./output";

/** `gci datacenter restart <name>`: one datacenter's cluster manager, on the same endpoint. */
export function datacenterCommand(): Command {
  const cmd = new Command("datacenter").description("operate one datacenter of a local world");
  cmd
    .command("restart <name>")
    .description(
      "restart a datacenter's cluster manager on the same endpoint; its VMs and process instances keep running and the new one adopts them",
    )
    .option(
      "--world <dir>",
      "world folder (default $GCI_WORLD, else world/ in the state folder: see `gci env`)",
    )
    .option(
      "--grace <seconds>",
      "how long the old cluster manager has to finish its calls before SIGKILL",
      wholeNumber(0, 3600),
      15,
    )
    .option("--json", "print the old and new process as JSON")
    .action(async (name: string, opts: { world?: string; grace: number; json?: boolean }) => {
      const state = requireWorld(worldDir(opts.world));
      const report = await restartDatacenter(state, name, { graceMs: opts.grace * 1000 });
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else {
        const how = {
          stopped: `pid ${report.before.pid} stopped`,
          killed: `pid ${report.before.pid} killed after ${opts.grace} s`,
          gone: `pid ${report.before.pid} was not running`,
        }[report.old];
        console.log(`restarted ${name} on ${report.after.endpoint}: ${how}, now pid ${report.after.pid}`);
      }
    });
  return cmd;
}
