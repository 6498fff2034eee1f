import { Command } from "commander";
import type { EngineEvent } from "@pulumi/pulumi/automation";
import { previewReport } from "../pulumi/dynamic";
import { invalid } from "../common/errors";
import { openStack } from "../pulumi/engine/stack";

type Op = "preview" | "up" | "refresh" | "destroy" | "output" | "cancel";

/** `gci stack <op>`: drives a Pulumi project folder through the real `pulumi` CLI. */
export function stackCommand(): Command {
  const cmd = new Command("stack").description(
    "run a Pulumi project (a folder with Pulumi.yaml and index.ts) through the pulumi CLI built by setup",
  );
  for (const op of ["preview", "up", "refresh", "destroy", "output", "cancel"] as Op[]) {
    const sub = cmd
      .command(op)
      .description(describe(op))
      .option("-d, --dir <folder>", "the Pulumi project folder", ".")
      .option("-s, --stack <name>", "the stack name", "dev")
      .option("-c, --config <key=value...>", "stack config to set first (key=value, repeatable)")
      .option(
        "--state <folder>",
        "state folder (file backend and PULUMI_HOME); default $GCI_STATE, else $XDG_STATE_HOME/gci, else ~/.local/state/gci",
      )
      .option("--json", "print a JSON summary on stdout (engine output goes to stderr)")
      .action(async (opts) => runOp(op, opts));
    if (op === "refresh")
      sub.option("--clear-pending-creates", "drop creates an interrupted update left pending");
  }
  return cmd;
}

function describe(op: Op): string {
  switch (op) {
    case "preview":
      return "show what an update would change, moving nothing";
    case "up":
      return "create or update the stack's resources";
    case "refresh":
      return "read the real state of the stack's resources";
    case "destroy":
      return "delete every resource of the stack";
    case "output":
      return "print the stack's outputs";
    case "cancel":
      return "remove the lock an interrupted update left (pulumi cancel)";
  }
}

interface OpOptions {
  dir: string;
  stack: string;
  config?: string[];
  state?: string;
  json?: boolean;
  clearPendingCreates?: boolean;
}

async function runOp(op: Op, opts: OpOptions): Promise<void> {
  const stack = await openStack({
    projectDir: opts.dir,
    stackName: opts.stack,
    stateDir: opts.state,
    // Only preview and up bring a stack into being; the others need one.
    create: op === "preview" || op === "up",
  });
  for (const pair of opts.config ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0)
      throw invalid(`--config "${pair}" is not key=value: write it as e.g. --config gci:region=eu`);
    await stack.setConfig(pair.slice(0, eq), { value: pair.slice(eq + 1) });
  }
  const out = opts.json ? process.stderr : process.stdout;
  const onOutput = (s: string) => out.write(s);
  let summary: unknown;
  switch (op) {
    case "preview": {
      // The engine's events carry each resource's planned transfer; --json reports them for CI.
      const events: EngineEvent[] = [];
      const r = await stack.preview({ onOutput, diff: true, onEvent: (e) => events.push(e) });
      summary = { changeSummary: r.changeSummary, ...previewReport(events) };
      break;
    }
    case "up": {
      const r = await stack.up({ onOutput });
      summary = { summary: r.summary, outputs: plainOutputs(r.outputs) };
      break;
    }
    case "refresh": {
      const r = await stack.refresh({ onOutput, clearPendingCreates: opts.clearPendingCreates });
      summary = { summary: r.summary };
      break;
    }
    case "destroy": {
      const r = await stack.destroy({ onOutput });
      summary = { summary: r.summary };
      break;
    }
    case "cancel": {
      await stack.cancel();
      summary = { cancelled: true };
      break;
    }
    case "output": {
      const outputs = plainOutputs(await stack.outputs());
      if (!opts.json) for (const [k, v] of Object.entries(outputs)) out.write(`${k}: ${JSON.stringify(v)}\n`);
      summary = { outputs };
      break;
    }
  }
  if (opts.json) process.stdout.write(JSON.stringify(summary) + "\n");
}

function plainOutputs(outputs: Record<string, { value: unknown; secret: boolean }>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, v.secret ? "[secret]" : v.value]));
}
