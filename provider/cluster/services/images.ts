/**
 * The image API of a cluster manager: UploadImage (within MAX_CONCURRENT_UPLOADS at once; the
 * framing and backpressure live in ../upload.ts), GetImage, ListImages, DeleteImage and
 * ReplicateImage.
 */

import type * as grpc from "@grpc/grpc-js";
import type { ClusterManagerHandlers } from "../../../schema/gen/gci/v1/ClusterManager";
import type { Image } from "../../../schema/gen/gci/v1/Image";
import type { Operation } from "../../../schema/gen/gci/v1/Operation";
import type { ReplicateImageRequest__Output } from "../../../schema/gen/gci/v1/ReplicateImageRequest";
import type { UploadHeader__Output } from "../../../schema/gen/gci/v1/UploadHeader";
import { checkDigest, checkId } from "../../catalog/validate";
import { exhausted, notFound, precondition, unavailable } from "../../common/errors";
import type { ImageEntry } from "../../image";
import { toStatus, unary } from "../../common/rpc/status";
import { failpoint } from "../failpoint";
import { type Incoming, forwardTo } from "../forwarding";
import { pickDatacenter } from "../placement";
import { removedWhileTransferring } from "../transfer";
import { UPLOAD_BUFFER_BYTES, type UploadCall, receiveUpload } from "../upload";
import { type ClusterContext, runOperation } from "./context";

const MiB = 1024 * 1024;
/** Uploads one cluster manager receives at once (each holds UPLOAD_BUFFER_BYTES and a message). */
export const MAX_CONCURRENT_UPLOADS = 8;
/** How long DeleteImage waits for transfers out that are ending (their receiver removed the image). */
const TRANSFERS_OUT_WAIT_MS = 3000;

type ImageHandlers = Pick<
  ClusterManagerHandlers,
  "UploadImage" | "GetImage" | "ListImages" | "DeleteImage" | "ReplicateImage"
>;

/** The image handlers of the cluster manager `ctx` describes. */
export function imageHandlers(ctx: ClusterContext): ImageHandlers {
  const images = new Images(ctx);
  return {
    UploadImage: (call, callback) => {
      images.upload(call).then(
        (img) => callback(null, img),
        (e) => callback(toStatus(e) as grpc.ServiceError),
      );
    },
    GetImage: unary(async (req) => images.describe(checkDigest(req.digest))),
    ListImages: unary(async (req) => {
      const all = await Promise.all((await ctx.catalog.listImages()).map((i) => images.describe(i.digest)));
      return { images: req.local_only ? all.filter((i) => i.datacenters?.includes(ctx.name)) : all };
    }),
    DeleteImage: unary(async (req) =>
      images.delete(checkId("request_id", req.request_id), checkDigest(req.digest)),
    ),
    ReplicateImage: unary(async (req, call) => images.replicate(req, call)),
  };
}

class Images {
  /** Uploads being received now. */
  private uploads = 0;

  constructor(private readonly ctx: ClusterContext) {}

  /** UploadImage, within MAX_CONCURRENT_UPLOADS at once: a header, then the archive's bytes. */
  async upload(call: UploadCall): Promise<Image> {
    if (this.uploads >= MAX_CONCURRENT_UPLOADS) {
      call.destroy();
      throw exhausted(
        `datacenter ${this.ctx.name} is receiving ${MAX_CONCURRENT_UPLOADS} uploads at once, its limit ` +
          `(each buffers up to ${UPLOAD_BUFFER_BYTES / MiB} MiB): retry when one of them has finished`,
      );
    }
    this.uploads++;
    try {
      return await this.receive(call);
    } finally {
      this.uploads--;
    }
  }

  /** Receives an upload (within its limits, see ../upload.ts) into the store, and records it. */
  private async receive(call: UploadCall): Promise<Image> {
    const upload = receiveUpload(call, this.ctx.name, this.ctx.maxUploadBytes);
    // Until its placement is recorded, the new copy is one the collector must not take.
    const uploaded = this.ctx.copyUse.upload();
    try {
      let h: UploadHeader__Output;
      let entry: ImageEntry;
      try {
        h = await upload.header;
        checkId("request_id", h.request_id);
        entry = await this.ctx.store.ingest(upload.body, {
          name: h.name || undefined,
          expectedDigest: h.expected_digest || undefined,
        });
      } finally {
        upload.done();
      }
      return await this.record(h, entry);
    } finally {
      uploaded();
    }
  }

  /** Records a stored upload in the catalog: the image, and its copy here as present. */
  private async record(h: UploadHeader__Output, entry: ImageEntry): Promise<Image> {
    await this.ctx.catalog.putImage({
      digest: entry.digest,
      name: entry.manifest.name,
      sizeBytes: entry.sizeBytes,
      owner: h.owner || "unknown",
      createdAt: Date.now(),
    });
    await this.putPresent(entry.digest, entry.sizeBytes);
    this.ctx.log.info("image.stored", {
      requestId: h.request_id,
      digest: entry.digest,
      name: entry.manifest.name,
      sizeBytes: entry.sizeBytes,
      chunks: entry.chunks.length,
    });
    return this.describe(entry.digest);
  }

  /** Records this datacenter's copy of `digest` as present. */
  private async putPresent(digest: string, sizeBytes: number): Promise<void> {
    await this.ctx.catalog.putPlacement({
      digest,
      datacenter: this.ctx.name,
      state: "present",
      bytesDone: sizeBytes,
      bytesTotal: sizeBytes,
      error: "",
      updatedAt: Date.now(),
    });
  }

  async describe(digest: string): Promise<Image> {
    const record = await this.ctx.catalog.getImage(digest);
    if (!record) throw notFound(`image ${digest} is not in the catalog: push it with \`gci image push\``);
    const placements = await this.ctx.catalog.listPlacements(digest);
    const local = await this.ctx.store.get(digest);
    return {
      digest,
      name: record.name,
      size_bytes: record.sizeBytes,
      owner: record.owner,
      datacenters: placements
        .filter((p) => p.state === "present")
        .map((p) => p.datacenter)
        .sort(),
      chunk_count: local?.chunks.length ?? 0,
      driver: local?.manifest.driver ?? "",
      ports: [...(local?.manifest.ports ?? [])],
    };
  }

  /**
   * DeleteImage: this datacenter's copy goes, unless something uses it. The placement goes
   * first and the bytes after, so a crash between the two leaves bytes no placement names
   * (the collector frees them), never a "present" copy without bytes.
   *
   * A removal wins over a transfer of the image into this datacenter (a replica, or one resumed
   * after a restart): the transfer is cancelled, the requests waiting on it fail, its placement
   * goes and its chunks are freed now, even when the copy being transferred in is the only one
   * this datacenter would have. What still refuses it: a VM group or instance here that uses the
   * image (a start's transfer has its group, so it is never cancelled), a claim, and transfers
   * out of this datacenter reading its copy (remove it from the receivers first; `gci image rm
   * --all` does, and a transfer out whose receiver cancelled it is waited for, up to
   * TRANSFERS_OUT_WAIT_MS).
   */
  async delete(requestId: string, digest: string): Promise<Image> {
    const { ctx } = this;
    const image = await this.describe(digest);
    if (ctx.deleting.has(digest))
      throw unavailable(`image ${digest} is being deleted from ${ctx.name}: retry`);
    ctx.deleting.add(digest);
    try {
      await this.waitForTransfersOut(digest);
      await this.refuseIfUsed(digest);
      const partial = await ctx.puller.cancel(digest, removedWhileTransferring(digest, ctx.name));
      await ctx.catalog.deletePlacement(digest, ctx.name);
      // A start or transfer that began while the placement was still there: the copy stays.
      if ((await this.copyUsers(digest)).length > 0) {
        await this.putPresent(digest, Number(image.size_bytes ?? 0));
        await this.refuseIfUsed(digest);
      }
      const left = (await ctx.catalog.listPlacements(digest)).filter((p) => p.state === "present");
      if (left.length === 0) await ctx.catalog.deleteImage(digest);
      failpoint("delete-image.between");
      await ctx.store.delete(digest);
      ctx.log.info("image.deleted", { requestId, digest, copiesLeft: left.length });
      await ctx.collector.collect("image.deleted", partial);
      return { ...image, datacenters: left.map((p) => p.datacenter).sort() };
    } finally {
      ctx.deleting.delete(digest);
    }
  }

  /**
   * Waits up to TRANSFERS_OUT_WAIT_MS while transfers out are the only users of the copy: one
   * whose receiver just removed the image (and so cancelled it) ends within moments.
   */
  private async waitForTransfersOut(digest: string): Promise<void> {
    const until = Date.now() + TRANSFERS_OUT_WAIT_MS;
    for (;;) {
      const readers = this.ctx.copyUse.readersOf(digest).length;
      if (readers === 0 || Date.now() > until || (await this.copyUsers(digest)).length > readers) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** FAILED_PRECONDITION naming every user of this datacenter's copy of `digest`, and the fix. */
  private async refuseIfUsed(digest: string): Promise<void> {
    const users = await this.copyUsers(digest);
    if (users.length === 0) return;
    throw precondition(
      `image ${digest} is used by ${users.join("; ")} in ${this.ctx.name}: stop them first (VM groups: ` +
        `gci vm stop <request id>; transfers: wait until they finish; claims: destroy those resources), then retry`,
    );
  }

  /** What uses this datacenter's copy of `digest`: groups, live instances, transfers reading it, claims. */
  private async copyUsers(digest: string): Promise<string[]> {
    const { catalog, name } = this.ctx;
    const groups = (await catalog.listVmGroups(name)).filter((g) => g.digest === digest);
    const grouped = new Set(groups.map((g) => g.requestId));
    const live = (await catalog.listVms({ datacenter: name })).filter(
      (v) =>
        v.digest === digest && !grouped.has(v.requestId) && v.state !== "stopped" && v.state !== "failed",
    );
    const claims = (await catalog.listImageRefs(digest)).filter((r) => r.datacenter === name);
    const users: string[] = [];
    if (groups.length > 0) users.push(`VM groups ${groups.map((g) => g.requestId).join(", ")}`);
    if (live.length > 0) users.push(`VMs ${live.map((v) => `${v.id} (${v.state})`).join(", ")}`);
    users.push(...this.ctx.copyUse.readersOf(digest));
    if (claims.length > 0) users.push(`claims of ${claims.map((r) => r.holder).join(", ")}`);
    return users;
  }

  /** ReplicateImage: a copy of the image brought into the named datacenter (forwarded there). */
  async replicate(req: ReplicateImageRequest__Output, call: Incoming): Promise<Operation> {
    const { ctx } = this;
    const requestId = checkId("request_id", req.request_id);
    const digest = checkDigest(req.digest);
    if (!(await ctx.catalog.getImage(digest))) {
      throw notFound(`image ${digest} is not in the catalog: push it first with \`gci image push\``);
    }
    const target = await pickDatacenter(ctx.catalog, { datacenter: req.datacenter });
    if (target.name !== ctx.name) {
      return forwardTo(
        ctx,
        call,
        `ReplicateImage ${requestId}`,
        target,
        (c) => c.replicateImage(requestId, digest, target.name),
        () => {
          if (req.forwarded_by)
            throw precondition(`replicate ${requestId} was forwarded to the wrong datacenter; retry`);
          ctx.log.info("replicate.forwarded", { requestId, to: target.name });
        },
      );
    }
    return runOperation(ctx, `replicate-${requestId}`, "replicate_image", async () => {
      try {
        return { transfer: (await ctx.puller.ensure(digest, requestId)) ?? null };
      } catch (e) {
        // The chunks a failed transfer received are unreferenced: the collector frees them.
        void ctx.collector.collect("replicate.failed");
        throw e;
      }
    });
  }
}
