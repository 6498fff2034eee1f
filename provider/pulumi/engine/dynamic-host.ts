/**
 * The provider process the pulumi CLI starts for dynamic resources (package "pulumi-nodejs"):
 * @pulumi/pulumi's own dynamic-provider host, with one addition so `pulumi import` works.
 *
 * The stock host finds each resource's provider in its state (the serialized `__provider`
 * property). An import — `pulumi import`, or the `import` resource option — reads with only an
 * id: no state, no inputs, so the stock host fails ("code must be a string, not undefined").
 * GCI's providers are the same for every resource of a kind (sdk/provider.ts), so for a GCI
 * type (pulumi-nodejs:dynamic/gci:<Kind>) this host supplies the provider such a Read lacks.
 * Everything else reaches the stock host unchanged.
 *
 * Started by the `pulumi-resource-pulumi-nodejs` shim next to the CLI (scripts/engine-shim) as:
 *   dynamic-host.js <engine address>
 */
import * as path from "path";
import { createRequire } from "module";
import { handlers } from "../dynamic/handlers";
import { packageRoot } from "../../common/paths";
import { exitWithParent } from "./parent";

const PROVIDER_KEY = "__provider";
const GCI_TYPE = /^pulumi-nodejs:dynamic\/gci:([A-Za-z]+)$/;

/** The GCI kind of a resource type token, or undefined for any other type. */
export function gciKind(type: string): string | undefined {
  const kind = GCI_TYPE.exec(type)?.[1];
  return kind !== undefined && Object.hasOwn(handlers, kind) ? kind : undefined;
}

/** The type token inside a URN (urn:pulumi:<stack>::<project>::<parent types$>type::<name>). */
export function typeOfUrn(urn: string): string {
  const parts = urn.split("::");
  return parts.length >= 4 ? (parts[2].split("$").pop() ?? "") : "";
}

/**
 * The serialized provider of `kind` as the stock host loads it (a module whose `handler()`
 * returns the provider): GCI's providerFor(kind), from this package's build.
 */
export function serializedProvider(kind: string): string {
  const sdkProvider = path.join(packageRoot(), "dist", "sdk", "provider.js");
  return `exports.handler = () => require(${JSON.stringify(sdkProvider)}).providerFor(${JSON.stringify(kind)});\n`;
}

interface Struct {
  toJavaScript(): Record<string, unknown>;
}
interface ReadRequestPrototype {
  getProperties(): Struct | undefined;
  getInputs(): Struct | undefined;
  getType(): string;
  getUrn(): string;
}

const hasProvider = (s: Struct | undefined): boolean => typeof s?.toJavaScript()[PROVIDER_KEY] === "string";

/**
 * Makes a Read without state of a GCI resource carry its provider. The stock host reads the
 * state through ReadRequest.getProperties, so that is where the provider is supplied.
 */
function supplyProviderOnImport(hostRequire: NodeJS.Require): void {
  const proto = hostRequire("../../proto/provider_pb") as {
    ReadRequest: { prototype: ReadRequestPrototype };
  };
  const { Struct } = hostRequire("google-protobuf/google/protobuf/struct_pb") as {
    Struct: { fromJavaScript(v: Record<string, unknown>): Struct };
  };
  const original = proto.ReadRequest.prototype.getProperties;
  proto.ReadRequest.prototype.getProperties = function (this: ReadRequestPrototype) {
    const state = original.call(this);
    if (hasProvider(state) || hasProvider(this.getInputs())) return state;
    const kind = gciKind(this.getType() || typeOfUrn(this.getUrn()));
    if (kind === undefined) return state;
    return Struct.fromJavaScript({ ...state?.toJavaScript(), [PROVIDER_KEY]: serializedProvider(kind) });
  };
}

function main(): void {
  exitWithParent();
  // The project's @pulumi/pulumi, as the stock launcher would run it; else this package's.
  const host = require.resolve("@pulumi/pulumi/cmd/dynamic-provider", { paths: [process.cwd(), __dirname] });
  try {
    supplyProviderOnImport(createRequire(host));
  } catch (e) {
    // Another @pulumi/pulumi layout: everything but import still works through the stock host.
    process.stderr.write(
      `pulumi-resource-pulumi-nodejs (gci): import of GCI resources is off: ${String(e)}\n`,
    );
  }
  // The stock host prints `${e}: ${e.stack}` before it answers a failed check, diff or read with
  // the error. GCI's errors say what to do in their message, which the engine shows: no trace.
  const print = console.error;
  console.error = (...args: unknown[]) => {
    if (typeof args[0] === "string" && args[0].startsWith("GciError: ")) return;
    print(...args);
  };
  // The stock host serves the engine at the address in process.argv[2] as soon as it loads.
  require(host);
}

if (require.main === module) main();
