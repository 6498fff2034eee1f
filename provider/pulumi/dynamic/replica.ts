import type * as pulumi from "@pulumi/pulumi";
import { checkDigest } from "../../catalog/validate";
import { Operation, waitForOperation } from "../../common/client";
import { GciError } from "../../common/errors";
import { withWorld } from "./connect";
import { claimCopy, releaseCopy } from "./image";
import { Failures, isUnknown } from "./inputs";
import { derivedRequestId, nextGeneration } from "./keys";
import { ImageHint, PlannedTransfer, announcePlan, holders } from "./plan";
import { ProgressReporter } from "./progress";
import { CatalogOutput, checkTopology } from "./topology";
import type { TransferOutput } from "./vmgroup-types";
import { notImportable } from "./import";

const MAX_ATTEMPTS = 20;

/** The inputs of an ImageReplica as the engine stores them (after check). */
export interface ReplicaInputs {
  readonly catalog: CatalogOutput;
  readonly image: string;
  readonly imageHint?: ImageHint | null;
  /** The datacenter that gets a copy. */
  readonly datacenter: string;
  readonly timeoutSeconds: number;
  readonly requestKey: string;
  readonly generation: number;
  readonly plannedTransfer?: PlannedTransfer | null;
}

/** The outputs: the inputs and the transfer that made the copy (null when it was there already). */
export interface ReplicaOutputs extends ReplicaInputs {
  readonly transfer: TransferOutput | null;
}

const label = (key: string): string => key.split("/").pop() || key;

function replaceReasons(olds: Partial<ReplicaInputs>, news: ReplicaInputs): string[] {
  const out: string[] = [];
  if (olds.image !== undefined && olds.image !== news.image) out.push("image");
  if (olds.datacenter !== undefined && olds.datacenter !== news.datacenter) out.push("datacenter");
  if (olds.catalog && news.catalog && olds.catalog.catalog !== news.catalog.catalog) out.push("catalog");
  return out;
}

export const replicaHandlers: pulumi.dynamic.ResourceProvider = {
  async check(olds: Partial<ReplicaInputs>, news: ReplicaInputs) {
    const f = new Failures();
    const topology = checkTopology(f, news.catalog, news.datacenter);
    f.field("image", news.image, (v) => checkDigest(v));
    if (typeof news.requestKey !== "string" || news.requestKey === "") {
      f.add("requestKey", "is missing: create ImageReplica through the gci SDK (new gci.ImageReplica)");
    }
    if (f.list.length > 0 || !topology || isUnknown(news)) return { inputs: news, failures: f.list };
    const creating = !olds || olds.requestKey === undefined;
    const replaces = creating ? [] : replaceReasons(olds, news);
    let inputs: ReplicaInputs = {
      ...news,
      generation: nextGeneration(creating ? undefined : olds, replaces),
    };
    try {
      await withWorld(topology, async (world) => {
        const image = await (await world.catalog()).getImage(news.image);
        if (!image && !news.imageHint) {
          f.add(
            "image",
            `image ${news.image} is not in the catalog: upload it first (gci.Image, or \`gci image push\`)`,
          );
          return;
        }
        let plan: PlannedTransfer | null = null;
        if (creating || replaces.length > 0) {
          const present = image ? await holders(world, news.image) : [news.imageHint!.datacenter];
          if (!present.includes(news.datacenter) && present.length > 0) {
            const bytes = image?.sizeBytes ?? news.imageHint?.sizeBytes ?? 0;
            plan = { digest: news.image, source: present[0], destination: news.datacenter, bytes };
            announcePlan(label(news.requestKey), plan);
          }
        }
        inputs = { ...inputs, plannedTransfer: plan };
      });
    } catch (e) {
      if (!GciError.isInstance(e)) throw e;
      f.add("catalog", `the world could not be asked (${e.message}): is it running? \`gci world status\``);
    }
    return { inputs, failures: f.list };
  },

  async diff(_id, olds: ReplicaOutputs, news: ReplicaInputs) {
    const replaces = replaceReasons(olds, news);
    const changed =
      olds.timeoutSeconds !== news.timeoutSeconds ||
      JSON.stringify(olds.catalog) !== JSON.stringify(news.catalog);
    return { changes: replaces.length > 0 || changed, replaces, deleteBeforeReplace: false };
  },

  async create(inputs: ReplicaInputs) {
    const progress = new ProgressReporter(label(inputs.requestKey));
    return withWorld(inputs.catalog, async (world) => {
      const before = await holders(world, inputs.image);
      if (before.includes(inputs.datacenter)) {
        progress.say(`${inputs.image.slice(0, 19)}… is in ${inputs.datacenter} already`);
        // Claimed once made (a failed create leaves no claim), so another stack's destroy leaves it.
        await claimCopy(world, inputs.image, inputs.datacenter, inputs.requestKey);
        return { id: `${inputs.image}@${inputs.datacenter}`, outs: { ...inputs, transfer: null } };
      }
      const client = await world.client(inputs.datacenter);
      const started = Date.now();
      let op: Operation | undefined;
      let spent: Operation | undefined;
      let requestId = "";
      for (let attempt = 0; attempt < MAX_ATTEMPTS && !op; attempt++) {
        requestId = derivedRequestId("rep", inputs.requestKey, inputs.generation, attempt);
        const answer = await client.replicateImage(requestId, inputs.image, inputs.datacenter);
        // A finished answer for a copy that is not there is an earlier, spent request of this id.
        if (!answer.done || !answer.error) {
          const done = answer.done ? answer : undefined;
          if (!done || (await holders(world, inputs.image)).includes(inputs.datacenter)) op = answer;
        }
        spent = answer;
      }
      if (!op) {
        throw new GciError(
          "FAILED_PRECONDITION",
          `copying ${inputs.image} into ${inputs.datacenter} failed ${MAX_ATTEMPTS} times, last: ${spent?.error}`,
        );
      }
      progress.say(
        `copying ${inputs.image.slice(0, 19)}… from ${before[0] ?? "?"} into ${inputs.datacenter}`,
      );
      op = await waitForOperation(client, op, {
        timeoutMs: inputs.timeoutSeconds * 1000,
        onProgress: (o) => progress.operation(o),
        // Forgotten by a restarted cluster manager: the same request resumes the copy.
        reissue: () => client.replicateImage(requestId, inputs.image, inputs.datacenter),
      });
      const t = op.transfer ?? op.start_vms?.transfer;
      const transfer: TransferOutput = t
        ? { source: t.source, destination: t.destination, bytes: Number(t.bytes), seconds: Number(t.seconds) }
        : {
            source: before[0] ?? "",
            destination: inputs.datacenter,
            bytes: Number(op.progress?.bytes_total ?? 0),
            seconds: (Date.now() - started) / 1000,
          };
      await claimCopy(world, inputs.image, inputs.datacenter, inputs.requestKey);
      return { id: `${inputs.image}@${inputs.datacenter}`, outs: { ...inputs, transfer } };
    });
  },

  async read(id, props: ReplicaOutputs) {
    if (props.catalog === undefined) {
      throw notImportable(
        "ImageReplica",
        "declare it in the program; a copy already present is not transferred again",
      );
    }
    return withWorld(props.catalog, async (world) => {
      const present = await holders(world, props.image);
      return present.includes(props.datacenter) ? { id, props } : { id: "", props: {} };
    });
  },

  async update(_id, olds: ReplicaOutputs, news: ReplicaInputs) {
    return { outs: { ...news, transfer: olds.transfer ?? null } };
  },

  async delete(_id, props: ReplicaOutputs) {
    const progress = new ProgressReporter(label(props.requestKey ?? props.datacenter));
    await withWorld(props.catalog, async (world) =>
      releaseCopy(world, props.image, props.datacenter, props.requestKey, progress),
    );
  },
};
