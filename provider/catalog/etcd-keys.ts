/**
 * The etcd catalog's key layout, relative to its prefix (variable parts URI-encoded):
 *   regions/<name>  datacenters/<name>  images/<digest>  placements/<digest>/<dc>
 *   leases/<digest>/<dc>  vmgroups/<requestId>  vms/<id>  imagerefs/<digest>/<dc>/<holder>
 *   alloc/<dc>   rewritten by every write that takes a datacenter's capacity, so such writes
 *                conflict with each other (see readRoom in etcd-groups.ts)
 */

const enc = encodeURIComponent;

export const REGIONS = "regions/";
export const DATACENTERS = "datacenters/";
export const IMAGES = "images/";
export const PLACEMENTS = "placements/";
export const VM_GROUPS = "vmgroups/";
export const VMS = "vms/";

export const regionKey = (name: string): string => `${REGIONS}${enc(name)}`;
export const datacenterKey = (name: string): string => `${DATACENTERS}${enc(name)}`;
export const imageKey = (digest: string): string => `${IMAGES}${enc(digest)}`;
/** The prefix of one image's placements, in every datacenter. */
export const placementsOf = (digest: string): string => `${PLACEMENTS}${enc(digest)}/`;
export const placementKey = (digest: string, datacenter: string): string =>
  `${placementsOf(digest)}${enc(datacenter)}`;
export const leaseKey = (digest: string, datacenter: string): string =>
  `leases/${enc(digest)}/${enc(datacenter)}`;
export const vmGroupKey = (requestId: string): string => `${VM_GROUPS}${enc(requestId)}`;
export const vmKey = (id: string): string => `${VMS}${enc(id)}`;
/** The prefix of the claims on one image's copies, in every datacenter. */
export const imageRefsOf = (digest: string): string => `imagerefs/${enc(digest)}/`;
export const imageRefKey = (digest: string, datacenter: string, holder: string): string =>
  `${imageRefsOf(digest)}${enc(datacenter)}/${enc(holder)}`;
export const allocKey = (datacenter: string): string => `alloc/${enc(datacenter)}`;

/** The decoded last part of a key ("vms/proc-1%2F.." -> "proc-1/.."), to name a bad record. */
export function keyName(key: string): string {
  const last = key.slice(key.indexOf("/") + 1);
  try {
    return decodeURIComponent(last);
  } catch {
    // A key written around GCI need not be valid URI encoding; it is only a name in a message,
    // so the raw text names it as well.
    return last;
  }
}
