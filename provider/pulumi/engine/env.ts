import * as fs from "fs";
import * as path from "path";
import { engineBinDir, packageRoot, stateRoot } from "../../common/paths";

/** Settings for running the Pulumi engine offline against a local file backend. */
export interface EngineEnvArgs {
  /**
   * Folder for the file backend and PULUMI_HOME.
   * @default stateRoot() ($GCI_STATE, else $XDG_STATE_HOME/gci, else ~/.local/state/gci)
   */
  readonly stateDir?: string;
  /**
   * Passphrase protecting stack secrets.
   * @default $PULUMI_CONFIG_PASSPHRASE, or "gci-local" when unset
   */
  readonly passphrase?: string;
}

/**
 * The environment every engine run uses — tests, the demo and users alike: a file backend
 * under the state folder, a project-local PULUMI_HOME, no update checks and no plugin
 * downloads (nothing may reach for the internet), and the engine's folder (the CLI and, next
 * to it, the dynamic-provider launcher) first on PATH. Creates the folders it names.
 */
export function engineEnv(args: EngineEnvArgs = {}): Record<string, string> {
  const stateDir = path.resolve(args.stateDir ?? stateRoot());
  const backend = path.join(stateDir, "backend");
  const home = path.join(stateDir, "pulumi-home");
  for (const dir of [backend, home]) fs.mkdirSync(dir, { recursive: true });
  return {
    // Programs the engine runs find the same state folder (and so the same default world).
    GCI_STATE: stateDir,
    PULUMI_BACKEND_URL: `file://${backend}`,
    PULUMI_HOME: home,
    PULUMI_CONFIG_PASSPHRASE: args.passphrase ?? process.env.PULUMI_CONFIG_PASSPHRASE ?? "gci-local",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: "true",
    // GCI's language and dynamic-provider hosts, run by the plugin shims next to the CLI.
    GCI_ENGINE_HOSTS: path.join(packageRoot(), "dist", "provider", "pulumi", "engine"),
    PATH: [engineBinDir(), process.env.PATH ?? ""].join(path.delimiter),
  };
}
