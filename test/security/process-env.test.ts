/**
 * Issue 10, item 1: an image's `env` never reaches a root process on the host. The process
 * driver's set-up (sh, unshare, mount, ...) runs as root before the sandbox exists; the image's
 * variables are for the entrypoint only, applied inside the sandbox after privileges are dropped.
 */

import { execFileSync } from "child_process";
import { randomUUID } from "crypto";
import * as fs from "fs";
import * as path from "path";
import * as tar from "tar-stream";
import { ProcessDriver } from "../../provider/cluster/vm";
import { testWorld } from "../support/world";
import { processFixture, ProcessFixture, runScript, specFor } from "./process-helpers";

/** A shared library whose constructor appends the uid of the process that loaded it to `record`. */
function compileCanary(dir: string, record: string): string {
  const source = path.join(dir, "canary.c");
  fs.writeFileSync(
    source,
    [
      "#include <stdio.h>",
      "#include <unistd.h>",
      "__attribute__((constructor)) static void canary(void) {",
      `  FILE *f = fopen(${JSON.stringify(record)}, "a");`,
      '  if (f != NULL) { fprintf(f, "%u\\n", (unsigned) getuid()); fclose(f); }',
      "}",
    ].join("\n"),
  );
  const library = path.join(dir, "canary.so");
  execFileSync("gcc", ["-shared", "-fPIC", "-o", library, source]);
  return library;
}

/** An image archive whose manifest sets `env`, written byte for byte (packDirectory would refuse it). */
async function archiveWithEnv(file: string, env: Record<string, string>): Promise<void> {
  const pack = tar.pack();
  const manifest = {
    schema: "gci.image/v1",
    name: "preload",
    driver: "process",
    entrypoint: ["bin/serve"],
    env,
  };
  pack.entry({ name: "manifest.json", mode: 0o644, mtime: new Date(0) }, JSON.stringify(manifest));
  pack.entry({ name: "bin/serve", mode: 0o755, mtime: new Date(0) }, "#!/bin/sh\necho GCI-READY\n");
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const part of pack) parts.push(part as Buffer);
  fs.writeFileSync(file, Buffer.concat(parts));
}

describe("an image's env never reaches root processes on the host (process driver)", () => {
  let fixture: ProcessFixture;
  let record: string;
  let library: string;
  const driver = new ProcessDriver();
  const loadedBy = (): string[] => fs.readFileSync(record, "utf8").split("\n").filter(Boolean);

  beforeAll(async () => {
    fixture = await processFixture("env");
    record = path.join(fixture.tmp, "loaded-by.txt");
    fs.writeFileSync(record, "");
    // Any process, whatever its uid, can record that it loaded the canary.
    fs.chmodSync(record, 0o666);
    library = compileCanary(fixture.tmp, record);
  }, 300_000);

  afterAll(() => {
    if (fixture) fs.rmSync(fixture.tmp, { recursive: true, force: true });
  });

  beforeEach(() => fs.writeFileSync(record, ""));

  it("the canary works: a root process started with LD_PRELOAD records uid 0", () => {
    execFileSync("/bin/true", { env: { LD_PRELOAD: library } });
    expect(loadedBy()).toEqual(["0"]);
  });

  it("a manifest's LD_PRELOAD (pushed past the refusal) is loaded by no root process", async () => {
    const spec = specFor(fixture, { script: "echo GCI-READY", env: { LD_PRELOAD: library } });
    const { output } = await runScript(driver, spec);
    expect(output).toContain("GCI-READY");
    expect(loadedBy().filter((uid) => uid === "0")).toEqual([]);
  }, 30_000);

  it("an ordinary variable reaches the entrypoint, beside the driver's GCI_* and PORT_*", async () => {
    const spec = specFor(fixture, {
      script: 'echo "GREETING=$GREETING"; echo "GCI_ID=$GCI_ID"; echo "HOME=$HOME"',
      env: { GREETING: "hello, world = 1" },
    });
    const { output } = await runScript(driver, spec);
    expect(output).toContain("GREETING=hello, world = 1");
    expect(output).toContain(`GCI_ID=${spec.id}`);
    expect(output).toContain("HOME=/");
  }, 30_000);

  it("a cluster manager refuses to store an image whose manifest sets LD_PRELOAD, naming it", async () => {
    const world = await testWorld({ regions: { sec: ["sec-1"] } });
    try {
      const file = path.join(fixture.tmp, "preload.tar");
      await archiveWithEnv(file, { LD_PRELOAD: library });
      const upload = world
        .client("sec-1")
        .uploadImage(fs.createReadStream(file), { request_id: randomUUID(), name: "" });
      await expect(upload).rejects.toThrow(/LD_PRELOAD/);
      expect(await world.client("sec-1").listImages()).toEqual([]);
    } finally {
      await world.stop();
    }
  }, 120_000);
});
