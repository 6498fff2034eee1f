import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import { exitWithParent } from "./parent";
import { loadProgram, programEntry } from "./program";

/**
 * GCI's Node.js language host: what `pulumi up` in a project folder launches as
 * `pulumi-language-nodejs`. The Go host of that name cannot be built here (its module is not
 * served by the module proxy), so this one serves the same LanguageRuntime gRPC service with
 * the Automation API's own in-process server: each Run loads the project's index.ts (or
 * index.js) in this process, where the Pulumi runtime talks to the engine. The engine starts
 * one host per operation and stops it afterwards.
 *
 * Invoked by the engine as: pulumi-language-nodejs [-flags...] <engine address>
 */
// The Automation API's LanguageServer is internal to @pulumi/pulumi; it is the same code that
// runs inline programs, so it behaves as the SDK expects.
const { LanguageServer } = require("@pulumi/pulumi/automation/server");
const langrpc = require("@pulumi/pulumi/proto/language_grpc_pb");

interface RunRequest {
  getPwd(): string;
  getProgram(): string;
  setArgsList(args: string[]): void;
  getArgsList(): string[];
}

class ProjectLanguageServer extends LanguageServer {
  constructor(private readonly engineAddress: string) {
    super(async () => undefined);
  }

  run(call: { request: RunRequest }, callback: unknown): unknown {
    const req = call.request;
    const dir = path.resolve(req.getPwd() || process.cwd(), req.getProgram() || ".");
    const entry = programEntry(dir);
    this.program = () => loadProgram(entry);
    // The inline server reads the engine's address from the run's arguments; a launched host
    // is given it on its command line instead.
    req.setArgsList([this.engineAddress, ...req.getArgsList()]);
    return super.run(call, callback);
  }
}

async function main(argv: string[]): Promise<void> {
  exitWithParent();
  const engineAddress = argv.filter((a) => !a.startsWith("-")).pop() ?? "";
  const server = new grpc.Server({ "grpc.max_receive_message_length": 400 * 1024 * 1024 });
  server.addService(langrpc.LanguageRuntimeService, new ProjectLanguageServer(engineAddress));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  // The engine reads the port from the host's first line of output.
  process.stdout.write(`${port}\n`);
}

main(process.argv.slice(2)).catch((e) => {
  process.stderr.write(`pulumi-language-nodejs (gci): ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
