import * as path from "path";
import { Command, CommanderError } from "commander";
import { engineEnv } from "../pulumi/engine/env";
import { stateRoot } from "../common/paths";
import { GciError } from "../common/errors";
import { datacenterCommand } from "./datacenter";
import { runDoctor } from "./doctor";
import { table } from "./output";
import { imageCommand, transfersCommand } from "./image";
import { stackCommand } from "./stack";
import { vmCommand } from "./vm";
import { worldCommand } from "./world";

/** Builds the `gci` command tree. */
export function program(): Command {
  const root = new Command("gci")
    .description("GCI, the Global Computing Interface: VM images and VMs across regions, driven from Pulumi")
    .showHelpAfterError();

  root
    .command("doctor")
    .description("check what GCI needs on this machine; exits 1 when something required is missing")
    .option("--json", "print the rows as JSON")
    .action((opts: { json?: boolean }) => {
      const rows = runDoctor();
      if (opts.json) console.log(JSON.stringify(rows, null, 2));
      else {
        console.log(
          table(
            ["requirement", "status", "detail", "fix"],
            rows.map((r) => [r.name, r.status, r.detail, r.fix]),
          ),
        );
      }
      if (rows.some((r) => r.required && r.status === "missing")) process.exitCode = 1;
    });

  root
    .command("env")
    .description(
      'print the offline engine environment as shell exports: eval "$(npx gci env)", then run pulumi',
    )
    .option(
      "--state <folder>",
      "state folder (file backend and PULUMI_HOME); default $GCI_STATE, else $XDG_STATE_HOME/gci, else ~/.local/state/gci",
    )
    .action((opts: { state?: string }) => {
      const stateDir = path.resolve(opts.state ?? stateRoot());
      // A comment, so `eval` ignores it and a reader sees where stacks will be kept.
      console.log(`# GCI state (Pulumi backend and PULUMI_HOME): ${stateDir}`);
      for (const [key, value] of Object.entries(engineEnv({ stateDir }))) {
        console.log(`export ${key}=${shellQuote(value)}`);
      }
    });

  root.addCommand(worldCommand());
  root.addCommand(datacenterCommand());
  root.addCommand(imageCommand());
  root.addCommand(transfersCommand());
  root.addCommand(vmCommand());
  root.addCommand(stackCommand());
  return root;
}

/** Entry point of bin/gci: runs the command and turns errors into one clear line and exit 1. */
export function main(argv: string[]): void {
  program()
    .exitOverride()
    .parseAsync(argv)
    .catch((e: unknown) => {
      if (e instanceof CommanderError) {
        process.exitCode = e.exitCode;
        return;
      }
      const message = GciError.isInstance(e)
        ? `${e.code}: ${e.message}`
        : (engineFailure(e) ?? (e instanceof Error ? e.message : String(e)));
      console.error(`gci: ${message}`);
      process.exitCode = 1;
    });
}

/**
 * What a pulumi CLI run that failed under the Automation API printed to stderr — its errors,
 * without stack traces — or undefined for any other error. (The CommandError's message holds
 * the whole run, which `gci stack` has shown as it ran.)
 */
function engineFailure(e: unknown): string | undefined {
  const result = (e as { commandResult?: { stderr?: unknown; err?: { stderr?: unknown } } })?.commandResult;
  // The process's own stderr when the run was started; else the reason it could not be.
  const stderr = result?.err?.stderr ?? result?.stderr;
  if (typeof stderr !== "string") return undefined;
  const lines = stderr
    .split("\n")
    .filter((l) => !l.startsWith("Command failed with exit code") && !/^\s+at /.test(l));
  return `pulumi failed:\n${lines.join("\n").trim()}`;
}

/** Quotes a value for a POSIX shell. */
function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
