import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { stateRoot } from "../provider/common/paths";
import { GciError } from "../provider/common/errors";
import { MANIFEST_SCHEMA, Manifest, packDirectory, readImage } from "../provider/image";
import { CatalogInput, catalogValue } from "./catalog";
import { requestKey } from "./key";
import { providerFor } from "./provider";

/** The manifest of an image packed from a directory (see provider/image/manifest.ts). */
export type ImageManifestArgs = Omit<Manifest, "schema">;

/** The arguments of an Image. */
export interface ImageArgs {
  readonly catalog: CatalogInput;
  /** The home datacenter: where the image is uploaded, e.g. "us-1". */
  readonly datacenter: pulumi.Input<string>;
  /**
   * A GCI image archive (as `gci image build` writes it). Set this or `directory`.
   * @default none
   */
  readonly file?: pulumi.Input<string>;
  /**
   * A folder to pack reproducibly (same files, same digest) with `manifest`. Set this or `file`.
   * @default none
   */
  readonly directory?: pulumi.Input<string>;
  /**
   * The manifest of an image packed from `directory`: name, driver ("qemu" or "process"),
   * kernel/initrd or entrypoint, ports, env.
   * @default none (required with `directory`)
   */
  readonly manifest?: pulumi.Input<ImageManifestArgs>;
  /**
   * How long the upload may take, in seconds (custom timeouts do not reach dynamic providers).
   * @default 600
   */
  readonly timeoutSeconds?: pulumi.Input<number>;
}

/** What the program knows about an image before it is uploaded (known during preview). */
export interface PreparedImage {
  readonly file: string;
  readonly digest: string;
  readonly sizeBytes: number;
  readonly name: string;
  readonly driver: string;
  readonly ports: number[];
  /** Home datacenter. */
  readonly datacenter: string;
  readonly sourceProblem: { property: string; reason: string } | null;
}

const BRAND = Symbol.for("gci:Image");

/**
 * A VM image uploaded to its home datacenter. The program packs and hashes it, so the digest
 * and size are known at preview; a content change (a new digest) replaces it, and the old
 * image is deleted from every datacenter only after the VM groups using it are gone.
 */
export class Image extends pulumi.dynamic.Resource {
  /** "sha256:<hex>" of the archive. */
  declare readonly digest: pulumi.Output<string>;
  declare readonly sizeBytes: pulumi.Output<number>;
  declare readonly name: pulumi.Output<string>;
  /** "qemu" or "process". */
  declare readonly driver: pulumi.Output<string>;
  /** Guest ports the image declares. */
  declare readonly ports: pulumi.Output<number[]>;
  /** The home datacenter. */
  declare readonly datacenter: pulumi.Output<string>;
  /** The datacenters that held the image right after its upload. */
  declare readonly datacenters: pulumi.Output<string[]>;
  /** Digest, size and home as the program computed them, known during preview. */
  readonly prepared: pulumi.Output<PreparedImage>;

  constructor(name: string, args: ImageArgs, opts?: pulumi.CustomResourceOptions) {
    const prepared = prepareImage(args);
    super(
      providerFor("Image"),
      name,
      {
        catalog: catalogValue(args.catalog),
        datacenter: args.datacenter,
        file: prepared.file,
        digest: prepared.digest,
        sizeBytes: prepared.sizeBytes,
        name: prepared.name,
        driver: prepared.driver,
        ports: prepared.ports,
        sourceProblem: prepared.sourceProblem,
        timeoutSeconds: args.timeoutSeconds ?? 600,
        requestKey: requestKey("Image", name, opts),
        generation: undefined,
        datacenters: undefined,
      },
      opts,
      "gci",
      "Image",
    );
    this.prepared = prepared;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** True for any Image, also one made by another copy of this module. */
  static isInstance(value: unknown): value is Image {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/**
 * The `image` and `imageHint` inputs of a resource that uses an image: an Image of this program
 * gives its digest and what the planner needs before it is uploaded (home datacenter, size,
 * ports); a digest gives itself and no hint. @internal
 */
export function imageInputs(image: Image | pulumi.Input<string>) {
  if (!Image.isInstance(image)) return { image, imageHint: null };
  return {
    image: image.prepared.digest,
    imageHint: image.prepared.apply((p) => ({
      datacenter: p.datacenter,
      sizeBytes: p.sizeBytes,
      ports: p.ports,
    })),
  };
}

/** `opts`, depending on `image` when it is an Image of this program. @internal */
export function dependOnImage<T extends pulumi.ResourceOptions>(
  image: Image | pulumi.Input<string>,
  opts: T | undefined,
): T | undefined {
  return Image.isInstance(image) ? (pulumi.mergeOptions(opts, { dependsOn: [image] }) as T) : opts;
}

/** Reads (file) or packs (directory) the image in the program; a problem is passed on to check. */
function prepareImage(args: ImageArgs): pulumi.Output<PreparedImage> {
  return pulumi
    .all([args.file, args.directory, args.manifest, args.datacenter])
    .apply(async ([file, directory, manifest, datacenter]) => {
      const blank = { file: "", digest: "", sizeBytes: 0, name: "", driver: "", ports: [], datacenter };
      const problem = (property: string, reason: string): PreparedImage => ({
        ...blank,
        sourceProblem: { property, reason },
      });
      if (file && directory) return problem("file", "set file or directory, not both");
      try {
        if (file) {
          const abs = path.resolve(file);
          const info = await readImage(abs);
          return {
            file: abs,
            digest: info.digest,
            sizeBytes: info.sizeBytes,
            name: info.manifest.name,
            driver: info.manifest.driver,
            ports: [...(info.manifest.ports ?? [])],
            datacenter,
            sourceProblem: null,
          };
        }
        if (directory) {
          if (!manifest)
            return problem("manifest", "is required with directory: give name, driver and its files");
          return { ...(await pack(path.resolve(directory), manifest)), datacenter, sourceProblem: null };
        }
      } catch (e) {
        const reason = GciError.isInstance(e) || e instanceof Error ? e.message : String(e);
        return problem(file ? "file" : "directory", reason);
      }
      return problem("file", "say what to upload: file (a GCI image archive) or directory (with manifest)");
    });
}

/** Packs a directory into <state folder>/images/<digest>.tar (reproducible, so repeated runs reuse it). */
async function pack(directory: string, manifest: ImageManifestArgs) {
  const cache = path.join(stateRoot(), "images");
  fs.mkdirSync(cache, { recursive: true });
  const tmp = path.join(cache, `.pack-${process.pid}-${Date.now()}.tar`);
  const full: Manifest = { schema: MANIFEST_SCHEMA, ...manifest };
  const result = await packDirectory(directory, full, tmp);
  const file = path.join(cache, `${result.digest.slice("sha256:".length)}.tar`);
  if (fs.existsSync(file)) fs.rmSync(tmp);
  else fs.renameSync(tmp, file);
  return {
    file,
    digest: result.digest,
    sizeBytes: result.sizeBytes,
    name: manifest.name,
    driver: manifest.driver,
    ports: [...(manifest.ports ?? [])],
  };
}
