import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { checkDiskFile, diskProblem } from "../../../provider/image/qcow2";

// Real qcow2 files made by qemu-img (installed by set-up), each with one way out of itself.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-qcow2-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function qemuImg(...args: string[]): string {
  const out = path.join(dir, `disk-${fs.readdirSync(dir).length}.qcow2`);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", ...args, out, "1M"]);
  return out;
}

describe("diskProblem", () => {
  const canary = path.join(dir, "canary.raw");
  beforeAll(() => fs.writeFileSync(canary, Buffer.alloc(1024 * 1024, 7)));

  it("accepts a self-contained qcow2 (v3 and v2) and raw bytes", () => {
    expect(() => checkDiskFile("plain", qemuImg())).not.toThrow();
    expect(() => checkDiskFile("v2", qemuImg("-o", "compat=0.10"))).not.toThrow();
    expect(diskProblem(Buffer.from("just raw bytes"))).toBeUndefined();
  });

  it("refuses a backing file, naming it", () => {
    const disk = qemuImg("-b", canary, "-F", "raw");
    expect(() => checkDiskFile("disk.qcow2", disk)).toThrow(
      /disk disk\.qcow2 is a qcow2 image with a backing file/,
    );
    expect(() => checkDiskFile("disk.qcow2", disk)).toThrow(canary);
  });

  it("refuses a json: backing", () => {
    const spec = `json:{"driver":"raw","file":{"driver":"file","filename":"${canary}"}}`;
    // qemu-img opens the backing to learn its size unless told it (-u, with the size given).
    const disk = qemuImg("-u", "-b", spec, "-F", "raw");
    expect(diskProblem(fs.readFileSync(disk))).toMatch(/backing file \("json:/);
  });

  it("refuses an external data file", () => {
    const disk = qemuImg("-o", `data_file=${path.join(dir, "data.raw")}`);
    expect(diskProblem(fs.readFileSync(disk))).toMatch(/external data file/);
  });

  it("refuses a qcow2 header cut short", () => {
    expect(diskProblem(fs.readFileSync(qemuImg()).subarray(0, 40))).toMatch(/truncated/);
  });
});
