/**
 * The orders the catalog's lists come in (see Catalog in types.ts). The etcd engine sorts with
 * these; the SQLite engine's ORDER BY clauses give the same orders for names, digests and ids,
 * which are checked ASCII text, where SQLite's byte order and JavaScript's code-unit order agree.
 * A claim's holder may be any printable text: for holders with characters beyond U+FFFF the two
 * orders can differ (code point vs UTF-16 code unit), a difference kept as it was.
 */

import type {
  DatacenterRecord,
  ImageRecord,
  ImageRefRecord,
  PlacementRecord,
  VmGroupRecord,
  VmRecord,
} from "./types";

/** Ascending by a text key, compared as JavaScript compares strings. */
export const byKey =
  <T>(key: (t: T) => string) =>
  (a: T, b: T): number => {
    const x = key(a);
    const y = key(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };

export const datacenterOrder = byKey((d: DatacenterRecord) => d.name);
export const imageOrder = byKey((i: ImageRecord) => i.digest);
/** By digest, then datacenter (NUL sorts before every character a name can hold). */
export const placementOrder = byKey((p: PlacementRecord) => `${p.digest}\u0000${p.datacenter}`);
export const vmGroupOrder = byKey((g: VmGroupRecord) => g.requestId);
export const vmOrder = byKey((v: VmRecord) => v.id);
/** Claims on one image: by datacenter, then holder. */
export const imageRefOrder = byKey((r: ImageRefRecord) => `${r.datacenter}\u0000${r.holder}`);
