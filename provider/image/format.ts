/**
 * The GCI image format: a tar archive whose first entry is `manifest.json`, followed by the
 * image's files. `packDirectory` (pack.ts) writes one reproducibly; `readImage` streams an
 * untrusted one and checks every entry as it arrives (reader.ts), so a bad archive is refused
 * before its files are used and memory stays bounded whatever the archive's size.
 *
 * This module is the format's entry point: its exports are the format's public surface.
 * `validateArchive` is defined here, not re-exported, because extract.ts calls it through this
 * module's exports (a test replaces it there to reach the writing pass alone).
 */

import { createReadStream } from "fs";
import { stat } from "fs/promises";
import type { Readable } from "stream";
import * as tar from "tar-stream";
import { GciError, invalid, notFound } from "../common/errors";
import { Meter, checkDigest, show } from "../common/digest";
import { ArchiveReader } from "./reader";
import { Feeder, flowing, settle } from "./streams";
import type { ArchiveSource, ImageInfo, ReadImageOptions } from "./types";

export { MAX_EXTENDED_HEADER_BYTES } from "./reader";
export { packDirectory } from "./pack";
export type { ArchiveEntry, ArchiveSource, ImageInfo, PackResult, ReadImageOptions } from "./types";

/**
 * Streams an untrusted image archive, verifying it as it goes, and resolves with its manifest
 * and digest. Rejects with INVALID_ARGUMENT naming the entry and the rule it breaks, or
 * DATA_LOSS when `expectedDigest` does not match.
 */
export async function readImage(source: ArchiveSource, options: ReadImageOptions = {}): Promise<ImageInfo> {
  if (options.expectedDigest !== undefined) checkDigest(options.expectedDigest, "expected digest");
  const input = typeof source === "string" ? await openArchiveFile(source) : source;
  const extract = tar.extract();
  const meter = new Meter();
  const reader = new ArchiveReader();
  let tarError: unknown;
  extract.on("error", (e: unknown) => {
    tarError ??= e;
  });
  const feeder = new Feeder(input, flowing(extract), meter, options.onBytes);
  try {
    for await (const entry of extract) await reader.visit(entry, options.onEntry);
  } catch (e) {
    await settle(extract);
    // Not `await feeder.done`: a stalled upload would keep the rejection waiting for its next byte.
    await feeder.stop();
    throw explain(e, feeder.error, tarError, reader, meter);
  }
  await feeder.done;
  if (feeder.error !== undefined) throw feeder.error;
  return reader.finish(meter, options.expectedDigest);
}

/** Checks an archive without keeping any of it; same rules and errors as readImage. */
export function validateArchive(
  source: ArchiveSource,
  options: Pick<ReadImageOptions, "expectedDigest"> = {},
): Promise<ImageInfo> {
  return readImage(source, { expectedDigest: options.expectedDigest });
}

/** Turns whatever stopped the read into the error to report: ours, the source's, or tar-stream's. */
function explain(
  e: unknown,
  feedError: unknown,
  tarError: unknown,
  reader: ArchiveReader,
  meter: Meter,
): unknown {
  if (GciError.isInstance(e)) return e;
  if (feedError !== undefined) return feedError;
  if (tarError === undefined) return e;
  const message = tarError instanceof Error ? tarError.message : String(tarError);
  const where = reader.current === undefined ? "before the first entry" : `in entry ${show(reader.current)}`;
  if (/unexpected end of data/i.test(message)) {
    return invalid(
      `archive is truncated: it ends ${where} after ${meter.bytes} bytes (tar-stream: ${message}). ` +
        `Upload the complete file.`,
    );
  }
  return invalid(
    `archive is not a valid tar file: ${message} (${where}, within the first ${meter.bytes} bytes). ` +
      `Upload an uncompressed tar written by packDirectory.`,
  );
}

async function openArchiveFile(path: string): Promise<Readable> {
  const info = await stat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") throw notFound(`archive file ${show(path)} does not exist; check the path.`);
    throw e;
  });
  if (!info.isFile())
    throw invalid(`archive ${show(path)} is not a regular file; pass the path of a .tar file.`);
  return createReadStream(path, { highWaterMark: 1024 * 1024 });
}
