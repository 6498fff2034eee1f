import { randomUUID } from "crypto";
import * as fs from "fs";
import { Command } from "commander";
import { invalid } from "../common/errors";
import { MANIFEST_SCHEMA, assertManifest, packDirectory } from "../image";
import { bytes, ProgressBar, table, wholeNumber } from "./output";
import { clientFor, requireWorld, withCatalog, worldDir } from "./world";

export function imageCommand(): Command {
  const cmd = new Command("image").description(
    "build image archives; push, list and remove images in a world",
  );
  cmd
    .command("push <file>")
    .description("upload a GCI image archive (.tar) to a datacenter's cluster manager")
    .requiredOption("--dc <name>", "the datacenter to store it in")
    .option("--name <name>", "a name for people (default: the manifest's)")
    .option("--world <dir>", "world folder")
    .option("--json", "print the stored image as JSON")
    .action(async (file: string, opts) => {
      if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
        throw invalid(
          `"${file}" is not a file: pass a GCI image archive (build one with \`gci image build\`)`,
        );
      }
      const state = requireWorld(worldDir(opts.world));
      const client = clientFor(state, opts.dc);
      const size = fs.statSync(file).size;
      const bar = opts.json ? undefined : new ProgressBar(`push ${opts.dc}`);
      try {
        const image = await client.uploadImage(
          fs.createReadStream(file, { highWaterMark: 1024 * 1024 }),
          { request_id: randomUUID(), name: opts.name ?? "" },
          (sent) => bar?.update(sent, size),
        );
        bar?.done(`stored ${image.digest}`);
        if (opts.json) console.log(JSON.stringify(image, null, 2));
        else
          console.log(
            `${image.digest}  ${image.name}  ${bytes(image.size_bytes)}  in ${image.datacenters.join(", ")}`,
          );
      } finally {
        client.close();
      }
    });
  cmd
    .command("build <dir>")
    .description("pack a directory into a GCI image archive, reproducibly (same input, same digest)")
    .requiredOption("-o, --output <file>", "the archive to write")
    .option("--manifest <file>", "manifest JSON (schema gci.image/v1); or give the fields below")
    .option("--name <name>", "image name")
    .option("--driver <driver>", "qemu or process", "qemu")
    .option("--kernel <path>", "kernel, relative to <dir> (qemu)")
    .option("--initrd <path>", "initramfs, relative to <dir> (qemu)")
    .option("--port <n...>", "guest TCP port to forward (repeatable)", (v: string, prev: number[] = []) => [
      ...prev,
      wholeNumber(1, 65535)(v),
    ])
    .option("--json", "print {digest, sizeBytes} as JSON")
    .action(async (dir: string, opts) => {
      if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
        throw invalid(`"${dir}" is not a directory: give the folder to pack (its files become the image)`);
      }
      const manifest = assertManifest(
        opts.manifest
          ? readJson(opts.manifest, "--manifest")
          : {
              schema: MANIFEST_SCHEMA,
              name: opts.name,
              driver: opts.driver,
              ...(opts.kernel ? { kernel: opts.kernel } : {}),
              ...(opts.initrd ? { initrd: opts.initrd } : {}),
              ...(opts.port ? { ports: opts.port as number[] } : {}),
            },
        opts.manifest
          ? `manifest ${opts.manifest}`
          : "the manifest given by --name, --driver, --kernel, --initrd, --port",
      );
      const result = await packDirectory(dir, manifest, opts.output);
      if (opts.json) console.log(JSON.stringify(result));
      else console.log(`${result.digest}  ${bytes(result.sizeBytes)}  ${opts.output}`);
    });
  cmd
    .command("ls")
    .description("images in the catalog and the datacenters holding them")
    .option("--world <dir>", "world folder")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const state = requireWorld(worldDir(opts.world));
      const rows = await withCatalog(state, async (catalog) => {
        const placements = await catalog.listPlacements();
        return (await catalog.listImages()).map((i) => ({
          ...i,
          datacenters: placements
            .filter((p) => p.digest === i.digest && p.state === "present")
            .map((p) => p.datacenter)
            .sort(),
        }));
      });
      if (opts.json) console.log(JSON.stringify(rows, null, 2));
      else {
        console.log(
          table(
            ["digest", "name", "size", "datacenters"],
            rows.map((r) => [r.digest.slice(0, 19), r.name, bytes(r.sizeBytes), r.datacenters.join(",")]),
          ),
        );
      }
    });
  cmd
    .command("rm <digest>")
    .description("remove an image from one datacenter (--dc) or from every datacenter holding it (--all)")
    .option("--dc <name>", "the datacenter to remove it from")
    .option("--all", "remove it everywhere")
    .option("--world <dir>", "world folder")
    .action(async (digest: string, opts) => {
      if (!opts.dc && !opts.all) throw invalid("gci image rm needs --dc <name> or --all");
      const state = requireWorld(worldDir(opts.world));
      const holders = opts.all
        ? await withCatalog(state, async (c) =>
            // Receivers first: their removal cancels transfers in, which frees the copies they read.
            (await c.listPlacements(digest))
              .sort((a, b) => Number(a.state === "present") - Number(b.state === "present"))
              .map((p) => p.datacenter),
          )
        : [opts.dc as string];
      for (const dc of holders) {
        const client = clientFor(state, dc);
        try {
          await client.deleteImage(randomUUID(), digest);
          console.log(`removed ${digest} from ${dc}`);
        } finally {
          client.close();
        }
      }
    });
  return cmd;
}

export function transfersCommand(): Command {
  return new Command("transfers")
    .description("image transfers running (and failed) in the world")
    .option("--world <dir>", "world folder")
    .option("--all", "include finished transfers (placements present)")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const state = requireWorld(worldDir(opts.world));
      const rows = await withCatalog(state, async (c) =>
        (await c.listPlacements()).filter((p) => opts.all || p.state !== "present"),
      );
      if (opts.json) console.log(JSON.stringify(rows, null, 2));
      else {
        console.log(
          table(
            ["digest", "datacenter", "state", "done", "error"],
            rows.map((p) => [
              p.digest.slice(0, 19),
              p.datacenter,
              p.state,
              `${bytes(p.bytesDone)}/${bytes(p.bytesTotal)}`,
              p.error,
            ]),
          ),
        );
      }
    });
}

/** A JSON file a flag names, or INVALID_ARGUMENT naming the flag, the file and what is wrong. */
function readJson(file: string, flag: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw invalid(
      `${flag} ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)}): check the path`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalid(`${flag} ${file} is not JSON (${(e as Error).message}): fix the file`);
  }
}
