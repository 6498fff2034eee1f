/** The etcd catalog's image records: images, their placements, and the claims on their copies. */

import {
  IMAGES,
  PLACEMENTS,
  imageKey,
  imageRefKey,
  imageRefsOf,
  placementKey,
  placementsOf,
} from "./etcd-keys";
import type { EtcdStore } from "./etcd-store";
import { imageOrder, imageRefOrder, placementOrder } from "./order";
import { checkImageRef, checkImageRefKey } from "./refs";
import type { ImageRecord, ImageRefRecord, PlacementRecord } from "./types";
import { checkDigest, checkImage, checkPlacement, checkPlacementKey } from "./validate";

export function putImage(s: EtcdStore, image: ImageRecord): Promise<void> {
  return s.run(`put image ${JSON.stringify(image?.digest)}`, async () => {
    const i = checkImage(image);
    await s.putIfAbsent(imageKey(i.digest), i);
  });
}

export function getImage(s: EtcdStore, digest: string): Promise<ImageRecord | undefined> {
  return s.run(`get image ${JSON.stringify(digest)}`, async () => {
    checkDigest(digest);
    return s.getChecked(imageKey(digest), "image", checkImage);
  });
}

export function listImages(s: EtcdStore): Promise<ImageRecord[]> {
  return s.run("list images", async () =>
    (await s.listChecked(IMAGES, "image", checkImage)).sort(imageOrder),
  );
}

export function deleteImage(s: EtcdStore, digest: string): Promise<void> {
  return s.run(`delete image ${JSON.stringify(digest)}`, async () => {
    checkDigest(digest);
    const key = imageKey(digest);
    // etcd compares a missing key's version as 0, so the guard always holds; the transaction
    // is there to delete the image and its placements atomically.
    await s.ns
      .if(key, "Version", ">", -1)
      .then(s.ns.delete().key(key), s.ns.delete().prefix(placementsOf(digest)))
      .commit();
  });
}

export function putPlacement(s: EtcdStore, p: PlacementRecord): Promise<void> {
  return s.run(
    `put placement of ${JSON.stringify(p?.digest)} in ${JSON.stringify(p?.datacenter)}`,
    async () => {
      const q = checkPlacement(p);
      await s.ns.put(placementKey(q.digest, q.datacenter)).value(JSON.stringify(q));
    },
  );
}

export function getPlacement(
  s: EtcdStore,
  digest: string,
  datacenter: string,
): Promise<PlacementRecord | undefined> {
  return s.run(`get placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, async () => {
    checkPlacementKey(digest, datacenter);
    return s.getChecked(placementKey(digest, datacenter), "placement", checkPlacement);
  });
}

export function listPlacements(s: EtcdStore, digest?: string): Promise<PlacementRecord[]> {
  return s.run("list placements", async () => {
    const prefix = digest === undefined ? PLACEMENTS : placementsOf(checkDigest(digest));
    return (await s.listChecked(prefix, "placement", checkPlacement)).sort(placementOrder);
  });
}

export function deletePlacement(s: EtcdStore, digest: string, datacenter: string): Promise<void> {
  return s.run(`delete placement of ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, async () => {
    checkPlacementKey(digest, datacenter);
    await s.ns.delete().key(placementKey(digest, datacenter));
  });
}

export function putImageRef(s: EtcdStore, ref: ImageRefRecord): Promise<void> {
  return s.run(
    `claim image ${JSON.stringify(ref?.digest)} in ${JSON.stringify(ref?.datacenter)}`,
    async () => {
      const r = checkImageRef(ref);
      await s.ns.put(imageRefKey(r.digest, r.datacenter, r.holder)).value(JSON.stringify(r));
    },
  );
}

export function deleteImageRef(
  s: EtcdStore,
  digest: string,
  datacenter: string,
  holder: string,
): Promise<void> {
  return s.run(
    `release the claim on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
    async () => {
      checkImageRefKey(digest, datacenter, holder);
      await s.ns.delete().key(imageRefKey(digest, datacenter, holder));
    },
  );
}

export function listImageRefs(s: EtcdStore, digest: string): Promise<ImageRefRecord[]> {
  return s.run(`list the claims on ${JSON.stringify(digest)}`, async () => {
    const refs = await s.list<ImageRefRecord>(imageRefsOf(checkDigest(digest)));
    return refs.sort(imageRefOrder);
  });
}
