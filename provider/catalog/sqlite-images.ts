/** The SQLite catalog's image records: images, their placements, and the claims on their copies. */

import { checkImageRef, checkImageRefKey } from "./refs";
import type { ImageRecord, ImageRefRecord, PlacementRecord } from "./types";
import { ImageRefRow, ImageRow, PlacementRow, imageOut, placementOut, toImageRef } from "./sqlite-rows";
import type { SqliteStore } from "./sqlite-store";
import { checkDigest, checkImage, checkPlacement, checkPlacementKey } from "./validate";

export function putImage(s: SqliteStore, image: ImageRecord): Promise<void> {
  return s.run(`put image ${JSON.stringify(image?.digest)}`, () => {
    const i = checkImage(image);
    s.db
      .prepare(
        `INSERT OR IGNORE INTO images (digest, name, size_bytes, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
      )
      .run(i.digest, i.name, i.sizeBytes, i.owner, i.createdAt);
  });
}

export function getImage(s: SqliteStore, digest: string): Promise<ImageRecord | undefined> {
  return s.run(`get image ${JSON.stringify(digest)}`, () => {
    checkDigest(digest);
    const row = s.stmt("SELECT * FROM images WHERE digest = ?").get(digest) as ImageRow | undefined;
    return row && imageOut(row);
  });
}

export function listImages(s: SqliteStore): Promise<ImageRecord[]> {
  return s.run("list images", () => s.all(s.stmt("SELECT * FROM images ORDER BY digest").all(), imageOut));
}

export function deleteImage(s: SqliteStore, digest: string): Promise<void> {
  return s.run(`delete image ${JSON.stringify(digest)}`, () => {
    checkDigest(digest);
    s.immediate(() => {
      s.stmt("DELETE FROM placements WHERE digest = ?").run(digest);
      s.stmt("DELETE FROM images WHERE digest = ?").run(digest);
    });
  });
}

export function putPlacement(s: SqliteStore, p: PlacementRecord): Promise<void> {
  return s.run(`put placement of ${JSON.stringify(p?.digest)} in ${JSON.stringify(p?.datacenter)}`, () => {
    const q = checkPlacement(p);
    s.db
      .prepare(
        `INSERT OR REPLACE INTO placements (digest, datacenter, state, bytes_done, bytes_total, error, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(q.digest, q.datacenter, q.state, q.bytesDone, q.bytesTotal, q.error, q.updatedAt);
  });
}

export function getPlacement(
  s: SqliteStore,
  digest: string,
  datacenter: string,
): Promise<PlacementRecord | undefined> {
  return s.run(`get placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
    checkPlacementKey(digest, datacenter);
    const row = s.db
      .prepare("SELECT * FROM placements WHERE digest = ? AND datacenter = ?")
      .get(digest, datacenter) as PlacementRow | undefined;
    return row && placementOut(row);
  });
}

export function listPlacements(s: SqliteStore, digest?: string): Promise<PlacementRecord[]> {
  return s.run("list placements", () => {
    const rows =
      digest === undefined
        ? s.stmt("SELECT * FROM placements ORDER BY digest, datacenter").all()
        : s.stmt("SELECT * FROM placements WHERE digest = ? ORDER BY datacenter").all(checkDigest(digest));
    return s.all(rows, placementOut);
  });
}

export function deletePlacement(s: SqliteStore, digest: string, datacenter: string): Promise<void> {
  return s.run(`delete placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
    checkPlacementKey(digest, datacenter);
    s.stmt("DELETE FROM placements WHERE digest = ? AND datacenter = ?").run(digest, datacenter);
  });
}

export function putImageRef(s: SqliteStore, ref: ImageRefRecord): Promise<void> {
  return s.run(`claim image ${JSON.stringify(ref?.digest)} in ${JSON.stringify(ref?.datacenter)}`, () => {
    const r = checkImageRef(ref);
    s.stmt(
      "INSERT OR REPLACE INTO image_refs (digest, datacenter, holder, created_at) VALUES (?, ?, ?, ?)",
    ).run(r.digest, r.datacenter, r.holder, r.createdAt);
  });
}

export function deleteImageRef(
  s: SqliteStore,
  digest: string,
  datacenter: string,
  holder: string,
): Promise<void> {
  return s.run(`release the claim on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
    checkImageRefKey(digest, datacenter, holder);
    s.stmt("DELETE FROM image_refs WHERE digest = ? AND datacenter = ? AND holder = ?").run(
      digest,
      datacenter,
      holder,
    );
  });
}

export function listImageRefs(s: SqliteStore, digest: string): Promise<ImageRefRecord[]> {
  return s.run(`list the claims on ${JSON.stringify(digest)}`, () => {
    checkDigest(digest);
    const rows = s
      .stmt("SELECT * FROM image_refs WHERE digest = ? ORDER BY datacenter, holder")
      .all(digest) as ImageRefRow[];
    return rows.map(toImageRef);
  });
}
