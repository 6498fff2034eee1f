import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { runGci } from "../support/engine";

/** `gci image build`: a folder into an image archive, reproducibly; bad input named, nothing written. */
describe("gci image build", () => {
  let tmp: string;
  let out: string;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-build-"));
    out = path.join(tmp, "image.tar");
    fs.mkdirSync(path.join(tmp, "src", "bin"), { recursive: true });
    fs.writeFileSync(path.join(tmp, "src", "bin", "serve"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
    fs.writeFileSync(
      path.join(tmp, "manifest.json"),
      JSON.stringify({ schema: "gci.image/v1", name: "hello", driver: "process", entrypoint: ["bin/serve"] }),
    );
  });

  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const build = (...args: string[]) => runGci(["image", "build", ...args, "-o", out], 60_000);

  it("packs a folder with a manifest file, to the same digest every time", async () => {
    const first = await build(path.join(tmp, "src"), "--manifest", path.join(tmp, "manifest.json"), "--json");
    expect(first.code).toBe(0);
    const again = await build(path.join(tmp, "src"), "--manifest", path.join(tmp, "manifest.json"), "--json");
    expect(JSON.parse(again.stdout)).toEqual(JSON.parse(first.stdout));
    expect(JSON.parse(first.stdout)).toMatchObject({
      digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    });
    fs.rmSync(out);
  });

  it("names what is wrong with the folder, the manifest file or the manifest, and writes nothing", async () => {
    const cases: [string[], string][] = [
      [[path.join(tmp, "nope")], `"${path.join(tmp, "nope")}" is not a directory`],
      [[path.join(tmp, "src"), "--manifest", path.join(tmp, "none.json")], "cannot be read (ENOENT)"],
      [[path.join(tmp, "src"), "--manifest", path.join(tmp, "src", "bin", "serve")], "is not JSON"],
      [[path.join(tmp, "src"), "--driver", "qemu"], "the manifest given by --name, --driver"],
    ];
    for (const [args, message] of cases) {
      const run = await build(...args);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(message);
      expect(fs.existsSync(out)).toBe(false);
    }
  });
});
