/**
 * Image records of the store: the frozen copy the index hands out, and the checks of what comes
 * in (a chunk list given by a caller, a record read back from disk, the manifest's name).
 */

import { dataLoss, invalid } from "../common/errors";
import { SHA256_HEX_PATTERN, checkChunkSha, show } from "../common/digest";
import { type Manifest, assertManifest } from "./manifest";
import { type ChunkRef, type ImageEntry, MAX_CHUNK_BYTES } from "./store-types";

/** A deep-frozen copy with the record's fields only, as the index keeps and hands out. */
export function freeze(entry: ImageEntry): ImageEntry {
  return Object.freeze({
    digest: entry.digest,
    manifest: deepFreeze(entry.manifest),
    sizeBytes: entry.sizeBytes,
    chunks: Object.freeze(
      entry.chunks.map((c) => Object.freeze({ sha256: c.sha256, size: c.size })),
    ) as ChunkRef[],
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Refuses a manifest whose name is not the one expected (undefined or empty: no check). */
export function checkName(manifest: Manifest, name: string | undefined): void {
  if (name !== undefined && name !== "" && manifest.name !== name) {
    throw invalid(
      `the archive's manifest names the image ${show(manifest.name)}, but ${show(name)} was expected; ` +
        `send the right archive or fix the name.`,
    );
  }
}

/** A chunk list given as input, checked: not empty, sha256 names, sizes 1 to MAX_CHUNK_BYTES. */
export function checkChunkList(digest: string, chunks: readonly ChunkRef[]): ChunkRef[] {
  if (!Array.isArray(chunks) || chunks.length === 0) {
    throw invalid(`the chunk list of image ${digest} is empty; pass every chunk of the archive, in order.`);
  }
  return chunks.map((c, i) => {
    checkChunkSha(c?.sha256, `chunk #${i} of image ${digest}`);
    if (!Number.isInteger(c.size) || c.size < 1 || c.size > MAX_CHUNK_BYTES) {
      throw invalid(
        `chunk #${i} of image ${digest} has size ${show(c.size)}; expected 1 to ${MAX_CHUNK_BYTES} bytes.`,
      );
    }
    return { sha256: c.sha256, size: c.size };
  });
}

/** An image record read back from disk; DATA_LOSS (naming the file) when it is not one. */
export function parseRecord(text: string, hex: string, path: string): ImageEntry {
  const corrupt = (why: string): Error =>
    dataLoss(
      `image record ${show(path)} is corrupt (${why}); delete it and upload or transfer the image again.`,
    );
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw corrupt((e as Error).message);
  }
  if (value?.digest !== `sha256:${hex}`)
    throw corrupt(`its digest ${show(value?.digest)} does not match its file name`);
  let manifest: Manifest;
  try {
    manifest = assertManifest(value.manifest, "its manifest");
  } catch (e) {
    throw corrupt((e as Error).message);
  }
  const chunks = value.chunks;
  if (!Array.isArray(chunks) || chunks.length === 0) throw corrupt("it has no chunk list");
  let total = 0;
  for (const c of chunks as ChunkRef[]) {
    if (!SHA256_HEX_PATTERN.test(String(c?.sha256)) || !Number.isInteger(c?.size) || c.size < 1) {
      throw corrupt(`chunk ${show(c?.sha256)} has no valid name or size`);
    }
    total += c.size;
  }
  if (value.sizeBytes !== total)
    throw corrupt(`sizeBytes ${show(value.sizeBytes)} is not the sum of its chunk sizes`);
  return { digest: value.digest, manifest, sizeBytes: total, chunks: chunks as ChunkRef[] };
}
