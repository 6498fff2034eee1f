import * as fs from "fs";
import * as path from "path";
import * as auto from "@pulumi/pulumi/automation";
import { invalid, notFound } from "../../common/errors";
import { engineEnv } from "./env";
import { loadProgram, programEntry } from "./program";
import { ENGINE_VERSION, engineBinDir } from "../../common/paths";

/** Which Pulumi project and stack to drive. */
export interface StackArgs {
  /** A folder with Pulumi.yaml and an index.ts (or index.js) program. */
  readonly projectDir: string;
  readonly stackName: string;
  /**
   * State folder for the file backend.
   * @default engineEnv's default ($GCI_STATE, else $XDG_STATE_HOME/gci, else ~/.local/state/gci)
   */
  readonly stateDir?: string;
  /** Create the stack when it does not exist (preview, up); otherwise that is NOT_FOUND. @default true */
  readonly create?: boolean;
}

/**
 * Opens (creating if needed) a stack of a Pulumi project folder, run by the `pulumi` CLI
 * built by scripts/setup.sh. The program runs in this process as an Automation API inline
 * program: the Node.js language host (pulumi-language-nodejs) is not served by the module
 * proxy this project builds from, and inline programs need only the CLI. See README.md.
 */
export async function openStack(args: StackArgs): Promise<auto.Stack> {
  const projectDir = path.resolve(args.projectDir);
  const projectName = readProjectName(projectDir);
  const entry = programEntry(projectDir);
  const envVars = engineEnv({ stateDir: args.stateDir });
  // The Automation API spawns `pulumi`; its own process needs the engine env too, because
  // the program (dynamic providers included) runs here.
  Object.assign(process.env, envVars);
  const pulumiCommand = await auto.PulumiCommand.get({
    root: path.dirname(engineBinDir()),
    version: new (require("semver").SemVer)(ENGINE_VERSION),
    skipVersionCheck: true,
  });
  const program = async () => loadProgram(entry);
  const stackArgs = { stackName: args.stackName, projectName, program };
  const options = { workDir: projectDir, envVars, pulumiCommand };
  if (args.create ?? true) return auto.LocalWorkspace.createOrSelectStack(stackArgs, options);
  try {
    return await auto.LocalWorkspace.selectStack(stackArgs, options);
  } catch (e) {
    if (!(e instanceof auto.StackNotFoundError)) throw e;
    throw notFound(
      `stack "${args.stackName}" of project ${projectName} does not exist in ${envVars.PULUMI_BACKEND_URL}: ` +
        `check --stack and --state, or create it with \`gci stack up\``,
    );
  }
}

function readProjectName(projectDir: string): string {
  const file = path.join(projectDir, "Pulumi.yaml");
  if (!fs.existsSync(file)) {
    throw invalid(`no Pulumi.yaml in "${projectDir}": pass --dir pointing at a Pulumi project folder`);
  }
  const match = /^name:\s*["']?([A-Za-z0-9_.-]+)["']?\s*$/m.exec(fs.readFileSync(file, "utf8"));
  if (!match) throw invalid(`"${file}" has no "name:" line: add one, e.g. "name: my-app"`);
  return match[1];
}
