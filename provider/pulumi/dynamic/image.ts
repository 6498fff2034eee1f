import { randomUUID } from "crypto";
import * as fs from "fs";
import type * as pulumi from "@pulumi/pulumi";
import { checkDigest } from "../../catalog/validate";
import type { ClusterClient, Image } from "../../common/client";
import { GciError, notFound } from "../../common/errors";
import { WorldConnection, withWorld } from "./connect";
import { Failures, isUnknown } from "./inputs";
import { derivedRequestId, nextGeneration } from "./keys";
import { holders } from "./plan";
import { ProgressReporter, mib } from "./progress";
import { CatalogOutput, checkTopology } from "./topology";
import { notImportable } from "./import";

/** The inputs of an Image as the engine stores them (the SDK packs and hashes it in the program). */
export interface ImageInputs {
  readonly catalog: CatalogOutput;
  /** The home datacenter, where it is uploaded. */
  readonly datacenter: string;
  /** The image archive on this machine. */
  readonly file: string;
  readonly digest: string;
  readonly sizeBytes: number;
  readonly name: string;
  readonly driver: string;
  readonly ports: readonly number[];
  /** Why the SDK could not read or pack the source (reported by check). */
  readonly sourceProblem?: { readonly property: string; readonly reason: string } | null;
  readonly timeoutSeconds: number;
  readonly requestKey: string;
  readonly generation: number;
}

/** The outputs: the inputs and the datacenters that held the image right after the upload. */
export interface ImageOutputs extends ImageInputs {
  readonly datacenters: string[];
}

const label = (key: string): string => key.split("/").pop() || key;

/** A new digest is a new image; so is another world. The home datacenter moves in place. */
export function imageReplaceReasons(olds: Partial<ImageInputs>, news: ImageInputs): string[] {
  const out: string[] = [];
  if (olds.digest !== undefined && olds.digest !== news.digest) out.push("digest");
  if (olds.catalog && news.catalog && olds.catalog.catalog !== news.catalog.catalog) out.push("catalog");
  return out;
}

export const imageHandlers: pulumi.dynamic.ResourceProvider = {
  async check(olds: Partial<ImageInputs>, news: ImageInputs) {
    const f = new Failures();
    checkTopology(f, news.catalog, news.datacenter);
    if (news.sourceProblem) f.add(news.sourceProblem.property, news.sourceProblem.reason);
    else f.field("digest", news.digest, (v) => checkDigest(v));
    if (typeof news.requestKey !== "string" || news.requestKey === "") {
      f.add("requestKey", "is missing: create Image through the gci SDK (new gci.Image)");
    }
    if (f.list.length > 0 || isUnknown(news)) return { inputs: news, failures: f.list };
    const creating = !olds || olds.requestKey === undefined;
    const replaces = creating ? [] : imageReplaceReasons(olds, news);
    if (creating || replaces.length > 0) {
      console.log(
        `gci: ${label(news.requestKey)}: plan: upload ${news.name} (${mib(news.sizeBytes)}) to ${news.datacenter}`,
      );
    }
    return {
      inputs: { ...news, generation: nextGeneration(creating ? undefined : olds, replaces) },
      failures: [],
    };
  },

  async diff(_id, olds: ImageOutputs, news: ImageInputs) {
    const replaces = imageReplaceReasons(olds, news);
    const keys = ["datacenter", "name", "timeoutSeconds"] as const;
    const changed = keys.filter((k) => olds[k] !== news[k]);
    const catalogChanged = JSON.stringify(olds.catalog) !== JSON.stringify(news.catalog);
    return {
      changes: replaces.length > 0 || changed.length > 0 || catalogChanged,
      replaces,
      deleteBeforeReplace: false,
    };
  },

  async create(inputs: ImageInputs) {
    const progress = new ProgressReporter(label(inputs.requestKey));
    return withWorld(inputs.catalog, async (world) => {
      const image = await ensureAt(world, inputs, inputs.datacenter, progress);
      await claimCopy(world, inputs.digest, inputs.datacenter, inputs.requestKey);
      return { id: inputs.digest, outs: { ...inputs, datacenters: image.datacenters ?? [] } };
    });
  },

  async read(id, props: ImageOutputs) {
    if (props.catalog === undefined) {
      throw notImportable(
        "Image",
        "declare it in the program with the same file; an image already stored is not uploaded again",
      );
    }
    return withWorld(props.catalog, async (world) => {
      const present = await holders(world, id);
      // Gone from its home datacenter: the engine forgets it, and the next `up` uploads it again.
      if (!present.includes(props.datacenter)) return { id: "", props: {} };
      return { id, props };
    });
  },

  async update(_id, olds: ImageOutputs, news: ImageInputs) {
    const progress = new ProgressReporter(label(news.requestKey));
    return withWorld(news.catalog, async (world) => {
      let datacenters = olds.datacenters ?? [];
      if (olds.datacenter !== news.datacenter) {
        const image = await ensureAt(world, news, news.datacenter, progress);
        await claimCopy(world, news.digest, news.datacenter, news.requestKey);
        await releaseCopy(world, olds.digest, olds.datacenter, olds.requestKey, progress);
        datacenters = (image.datacenters ?? []).filter((d) => d !== olds.datacenter);
      }
      return { outs: { ...news, datacenters } };
    });
  },

  async delete(id, props: ImageOutputs) {
    const progress = new ProgressReporter(label(props.requestKey ?? id));
    await withWorld(props.catalog, async (world) => {
      // Only this resource's own claim goes; then every copy nothing else uses (the home one and
      // those VM groups pulled). A copy another stack's Image or ImageReplica claims, or a VM
      // group, instance or transfer uses, stays: the cluster manager refuses to delete it.
      if (props.requestKey)
        await (await world.catalog()).deleteImageRef(id, props.datacenter, props.requestKey);
      for (const dc of await holders(world, id)) await deleteCopy(world, id, dc, progress);
    });
  },
};

/** Uploads the image to `datacenter` unless it is there already (a retried or shared upload). */
async function ensureAt(
  world: WorldConnection,
  inputs: ImageInputs,
  datacenter: string,
  progress: ProgressReporter,
): Promise<Image> {
  const client = await world.client(datacenter);
  const existing = await getImage(client, inputs.digest);
  if (existing?.datacenters?.includes(datacenter)) {
    progress.say(`${inputs.digest.slice(0, 19)}… is in ${datacenter} already`);
    return existing;
  }
  if (!fs.existsSync(inputs.file)) {
    throw notFound(`image file "${inputs.file}" is gone: run the program again so the SDK packs it anew`);
  }
  const requestId = derivedRequestId("img", inputs.requestKey, inputs.generation);
  progress.say(`uploading ${inputs.name} (${mib(inputs.sizeBytes)}) to ${datacenter}`);
  let last = Date.now();
  const upload = client.uploadImage(
    fs.createReadStream(inputs.file),
    { request_id: requestId, name: inputs.name, expected_digest: inputs.digest, owner: inputs.requestKey },
    (sent) => {
      if (Date.now() - last < 2000) return;
      last = Date.now();
      progress.say(`upload to ${datacenter}: ${mib(sent)} / ${mib(inputs.sizeBytes)}`);
    },
  );
  const image = await bounded(
    upload,
    inputs.timeoutSeconds * 1000,
    `upload of ${inputs.name} to ${datacenter}`,
  );
  progress.say(`stored in ${datacenter} as ${image.digest}`);
  return image;
}

async function getImage(client: ClusterClient, digest: string): Promise<Image | undefined> {
  try {
    return await client.getImage(digest);
  } catch (e) {
    if (GciError.isInstance(e) && e.code === "NOT_FOUND") return undefined;
    throw e;
  }
}

/**
 * Records that the resource `holder` needs the image's copy in `datacenter`, so another
 * stack's destroy of the same content leaves it (see Catalog.putImageRef).
 */
export async function claimCopy(
  world: WorldConnection,
  digest: string,
  datacenter: string,
  holder: string,
): Promise<void> {
  await (await world.catalog()).putImageRef({ digest, datacenter, holder, createdAt: Date.now() });
}

/** Drops `holder`'s claim on the copy in `datacenter`, then deletes the copy unless something else uses it. */
export async function releaseCopy(
  world: WorldConnection,
  digest: string,
  datacenter: string,
  holder: string | undefined,
  progress: ProgressReporter,
): Promise<void> {
  if (holder) await (await world.catalog()).deleteImageRef(digest, datacenter, holder);
  await deleteCopy(world, digest, datacenter, progress);
}

/** Deletes one copy; a copy still used (VM groups, instances, transfers, claims) is kept and said so. */
export async function deleteCopy(
  world: WorldConnection,
  digest: string,
  datacenter: string,
  progress: ProgressReporter,
): Promise<void> {
  try {
    await (await world.client(datacenter)).deleteImage(`del-${randomUUID()}`, digest);
    progress.say(`deleted ${digest.slice(0, 19)}… from ${datacenter}`);
  } catch (e) {
    if (GciError.isInstance(e) && e.code === "NOT_FOUND") return;
    if (GciError.isInstance(e) && e.code === "FAILED_PRECONDITION") {
      progress.say(`kept the copy in ${datacenter}, still in use: ${e.message}`);
      return;
    }
    throw e;
  }
}

/** Rejects with DEADLINE_EXCEEDED when `p` takes longer than `ms` (custom timeouts do not reach dynamic providers). */
export function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new GciError(
            "DEADLINE_EXCEEDED",
            `${what} did not finish within ${ms / 1000} s: raise timeoutSeconds`,
          ),
        ),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
