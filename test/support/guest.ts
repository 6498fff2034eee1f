import { execFile } from "child_process";
import { createHash } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { cacheRoot } from "../../provider/common/paths";
import { Manifest, packDirectory } from "../../provider/image";
import { packageRoot } from "../../provider/common/paths";

const execFileP = promisify(execFile);

/** The image recipes: examples/images/<recipe>/ (build.sh, manifest.json and their inputs). */
const RECIPES = path.join(packageRoot(), "examples", "images");

/** An image archive built from a recipe, cached across test runs. */
export interface BuiltImage {
  readonly file: string;
  /** "sha256:<hex>" of the archive. */
  readonly digest: string;
  readonly sizeBytes: number;
}

const built = new Map<string, Promise<BuiltImage>>();

/**
 * The debian-guest image (driver "qemu": this machine's Debian kernel and a busybox initramfs
 * that answers HTTP on port 80), built once per recipe and kernel version.
 */
export function guestImage(): Promise<BuiltImage> {
  return buildOnce("guest", { KERNEL_VERSION: kernelVersion() });
}

/** The process-web image (driver "process": busybox httpd on $PORT_80), built once per recipe. */
export function processImage(): Promise<BuiltImage> {
  return buildOnce("process-web", { KERNEL_VERSION: kernelVersion() });
}

/** Test-only recipes: test/support/images/<recipe>/. */
const TEST_RECIPES = path.join(packageRoot(), "test", "support", "images");

/**
 * The probe-guest image (test only, driver "qemu"): debian-guest plus a first init that prints
 * on the console what the guest reads from its disk and whether it reaches an address given as
 * gci.probe.connect=<host:port> on the kernel command line (see its init).
 */
export function probeGuestImage(): Promise<BuiltImage> {
  return buildOnce(
    "probe-guest",
    {
      KERNEL_VERSION: kernelVersion(),
      // It builds on debian-guest: a change there is a change here.
      GUEST_RECIPE: recipeHash(path.join(RECIPES, "guest"), {}),
    },
    TEST_RECIPES,
  );
}

function buildOnce(
  recipe: string,
  inputs: Record<string, string>,
  recipes: string = RECIPES,
): Promise<BuiltImage> {
  let image = built.get(recipe);
  if (image === undefined) {
    image = build(path.join(recipes, recipe), recipe, inputs);
    built.set(recipe, image);
    image.catch(() => built.delete(recipe));
  }
  return image;
}

/**
 * `${GCI_CACHE:-~/.cache/gci}/images/<recipe>-<hash>.tar`, the hash covering the recipe's files,
 * the kernel version and the busybox binary: staged by `build.sh --stage`, packed with the
 * recipe's manifest.json exactly as `gci image build --manifest` does.
 */
async function build(dir: string, recipe: string, inputs: Record<string, string>): Promise<BuiltImage> {
  const file = path.join(cacheRoot(), "images", `${recipe}-${recipeHash(dir, inputs)}.tar`);
  if (fs.existsSync(file)) return { file, ...(await digestOf(file)) };

  fs.mkdirSync(path.dirname(file), { recursive: true });
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), `gci-recipe-${recipe}-`));
  const partial = `${file}.${process.pid}.tmp`;
  try {
    await execFileP("bash", [path.join(dir, "build.sh"), "--stage", path.join(stage, "image")], {
      env: { ...process.env, ...inputs },
      maxBuffer: 16 * 1024 * 1024,
    });
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8")) as Manifest;
    const result = await packDirectory(path.join(stage, "image"), manifest, partial);
    // Concurrent builders write the same bytes (the build is reproducible); the last rename wins.
    fs.renameSync(partial, file);
    return { file, digest: result.digest, sizeBytes: result.sizeBytes };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
    fs.rmSync(partial, { force: true });
  }
}

function recipeHash(dir: string, inputs: Record<string, string>): string {
  const hash = createHash("sha256");
  const walk = (sub: string): void => {
    for (const name of fs.readdirSync(path.join(dir, sub)).sort()) {
      const relative = path.join(sub, name);
      const stat = fs.statSync(path.join(dir, relative));
      if (stat.isDirectory()) walk(relative);
      else
        hash.update(`${relative}\0${stat.mode & 0o111}\0`).update(fs.readFileSync(path.join(dir, relative)));
    }
  };
  walk("");
  for (const key of Object.keys(inputs).sort()) hash.update(`\0${key}=${inputs[key]}`);
  const busybox = fs.statSync("/bin/busybox");
  hash.update(`\0busybox=${busybox.size}:${busybox.mtimeMs}`);
  return hash.digest("hex").slice(0, 16);
}

/** The kernel build.sh picks: $KERNEL_VERSION, else the newest with /boot/vmlinuz-<v> and /lib/modules/<v>. */
function kernelVersion(): string {
  if (process.env.KERNEL_VERSION) return process.env.KERNEL_VERSION;
  const versions = fs.existsSync("/lib/modules") ? fs.readdirSync("/lib/modules") : [];
  const usable = versions
    .filter((v) => fs.existsSync(`/boot/vmlinuz-${v}`))
    .sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  const newest = usable[usable.length - 1];
  if (newest === undefined) {
    throw new Error(
      "no Debian kernel (/boot/vmlinuz-<v> with /lib/modules/<v>): run apt-get install -y linux-image-amd64",
    );
  }
  return newest;
}

async function digestOf(file: string): Promise<{ digest: string; sizeBytes: number }> {
  const hash = createHash("sha256");
  let sizeBytes = 0;
  for await (const chunk of fs.createReadStream(file)) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, sizeBytes };
}
