import { randomUUID } from "crypto";
import { Readable } from "stream";
import * as tar from "tar-stream";
import { MAX_LINK_WALK } from "../../provider/image/paths";
import { failure } from "../unit/image/helpers";
import { testWorld, type TestWorld } from "../support/world";

/**
 * Symlinks are resolved once the whole archive is known, synchronously: chains of links with
 * long targets that stay inside the image ("x/../x/../…/next") made that one pass walk millions
 * of path components, blocking the cluster manager's event loop. The walk is bounded.
 */

const LINKS_PER_CHAIN = 40; // Linux's limit of links followed for one path
/** "x/.." 1,000 times: 2,000 components that lead back where they started. */
const DETOUR = Array.from({ length: 1000 }, () => "x/..").join("/");

/** A good qemu image plus `chains` chains of LINKS_PER_CHAIN symlinks, each target DETOUR then the next link. */
async function symlinkMaze(chains: number): Promise<Buffer> {
  const pack = tar.pack();
  const parts: Buffer[] = [];
  const collected = (async () => {
    for await (const part of pack) parts.push(part as Buffer);
  })();
  const add = (header: Parameters<tar.Pack["entry"]>[0], body?: string) =>
    new Promise<void>((resolve, reject) => {
      const done = (e?: Error | null) => (e ? reject(e) : resolve());
      if (body === undefined) pack.entry(header, done);
      else pack.entry(header, body, done);
    });
  const manifest = {
    schema: "gci.image/v1",
    name: "maze",
    driver: "qemu",
    kernel: "boot/vmlinuz",
    initrd: "boot/initrd.img",
  };
  await add({ name: "manifest.json" }, JSON.stringify(manifest));
  await add({ name: "boot/vmlinuz" }, "kernel");
  await add({ name: "boot/initrd.img" }, "initrd");
  for (let c = 0; c < chains; c++) {
    for (let k = 0; k < LINKS_PER_CHAIN; k++) {
      const next = k + 1 < LINKS_PER_CHAIN ? `l${k + 1}` : "../boot/vmlinuz";
      await add({ name: `c${c}/l${k}`, type: "symlink", linkname: `${DETOUR}/${next}` });
    }
  }
  pack.finalize();
  await collected;
  return Buffer.concat(parts);
}

describe("symlink chains that make resolution walk far", () => {
  let world: TestWorld;

  beforeAll(async () => {
    world = await testWorld({ regions: { us: ["us-1"] } });
  });

  afterAll(async () => {
    await world?.stop();
  });

  test("are refused, naming the limit, and the cluster manager keeps serving", async () => {
    // Each chain walks about 2,000 x (40 + 39 + ... + 1) = 1.64 million components.
    const chains = Math.ceil(MAX_LINK_WALK / 1_640_000) + 1;
    const archive = await symlinkMaze(chains);
    const e = await failure(
      world.client("us-1").uploadImage(Readable.from([archive]), { request_id: randomUUID(), name: "" }),
    );
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(`more than ${MAX_LINK_WALK} path components`);
    expect(await world.client("us-1").checkHealth()).toBe("SERVING");
  });
});
