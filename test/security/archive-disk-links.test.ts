import { execFileSync } from "child_process";
import { randomUUID } from "crypto";
import { createReadStream, mkdtempSync, rmSync, symlinkSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { packDirectory } from "../../provider/image";
import { QEMU_MANIFEST, failure, makeImageDir } from "../unit/image/helpers";
import { testWorld, type TestWorld } from "../support/world";

/**
 * The push-time qcow2 check cannot be stepped around with links: a manifest disk that is a
 * symlink to a qcow2 with a backing file is refused by a real cluster manager, as a direct one
 * is (the corpus test covers that).
 */
describe("a manifest disk reached through a symlink", () => {
  let world: TestWorld;
  let tmp: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "gci-disk-links-"));
    world = await testWorld({ regions: { us: ["us-1"] } });
  });

  afterAll(async () => {
    await world?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("is refused when it leads to a qcow2 with a backing file", async () => {
    const dir = await makeImageDir(join(tmp, "img"));
    // The backing file is a path of this test's own folder, never created and never opened (-u).
    const canary = join(tmp, "canary.raw");
    const args = ["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-u", "-b", canary, "-F", "raw"];
    execFileSync("qemu-img", [...args, join(dir, "real.qcow2"), "1M"]);
    symlinkSync("real.qcow2", join(dir, "disk.qcow2"));
    await packDirectory(dir, { ...QEMU_MANIFEST, disk: "disk.qcow2" }, join(tmp, "linked.tar"));

    const e = await failure(
      world.client("us-1").uploadImage(createReadStream(join(tmp, "linked.tar")), {
        request_id: randomUUID(),
        name: "",
      }),
    );
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(
      'disk "disk.qcow2" (manifest field "disk") leads through links to "real.qcow2"',
    );
    expect(await world.client("us-1").listImages()).toEqual([]);
  });
});
