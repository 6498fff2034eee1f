/**
 * VM images: the archive format (pack, read, validate, extract) and the content-addressed
 * store a cluster manager keeps them in.
 */

export { ImageStore } from "./store";
export { checkChunkList } from "./store-record";
export { CHUNK_SIZE, GC_GRACE_MS, MAX_CHUNK_BYTES } from "./store-types";
export type {
  ChunkRef,
  CommitImageOptions,
  GcOptions,
  GcResult,
  ImageEntry,
  ImageStoreOptions,
  IngestOptions,
} from "./store-types";
export { MAX_EXTENDED_HEADER_BYTES, packDirectory, readImage, validateArchive } from "./format";
export type { ArchiveEntry, ArchiveSource, ImageInfo, PackResult, ReadImageOptions } from "./format";
export { extractImage } from "./extract";
export type { ExtractImageOptions } from "./extract";
export {
  MANIFEST_NAME,
  MANIFEST_SCHEMA,
  MAX_MANIFEST_BYTES,
  assertManifest,
  checkManifest,
} from "./manifest";
export type { Driver, Manifest, ManifestProblem } from "./manifest";
export type { EntryKind } from "./paths";
