/**
 * The route of a forwarded call. A cluster manager forwards a call to the datacenter that owns
 * its subject, at the endpoint the catalog names; each forward adds one hop to the call's
 * metadata ("gci-hops": how many, "gci-via": which), so a receiver can refuse a call that came
 * back to it (a datacenter record naming another's endpoint) or went too far, instead of
 * forwarding it again and again until deadlines end the chain. forwardTo is the one way a call
 * is forwarded, with one error mapping.
 */

import type * as grpc from "@grpc/grpc-js";
import { checkName, isEndpoint } from "../catalog/validate";
import type { Catalog, DatacenterRecord } from "../catalog";
import { ClusterClient } from "../common/client";
import { GciError, invalid, notFound, precondition, unavailable } from "../common/errors";
import type { Logger } from "./log";

/** Forwards one call may take: a client's call reaches its owner in one; more means the catalog is wrong. */
export const MAX_HOPS = 2;

export const HOPS_KEY = "gci-hops";
export const VIA_KEY = "gci-via";

/** One forward: `from` sent the call to `to`, at `endpoint`. */
export interface Hop {
  readonly from: string;
  readonly to: string;
  readonly endpoint: string;
}

/** The hops a received call went through; none for a call from a client. */
export function routeOf(metadata: grpc.Metadata): Hop[] {
  const hops = metadata.get(HOPS_KEY)[0];
  const via = metadata.get(VIA_KEY)[0];
  if (hops === undefined && via === undefined) return [];
  let route: unknown;
  try {
    route = JSON.parse(String(via));
  } catch {
    route = undefined;
  }
  if (!Array.isArray(route) || String(route.length) !== String(hops) || !route.every(isHop)) {
    throw invalid(
      `call metadata ${HOPS_KEY}=${JSON.stringify(String(hops))} ${VIA_KEY}=${JSON.stringify(String(via))} ` +
        `is not a route of forwards: only cluster managers set these; send the call without them`,
    );
  }
  return route;
}

function isHop(value: unknown): value is Hop {
  const h = value as Hop;
  try {
    return (
      typeof h === "object" &&
      h !== null &&
      !!checkName("hop", h.from) &&
      !!checkName("hop", h.to) &&
      isEndpoint(h.endpoint)
    );
  } catch {
    // checkName throws for a bad name: that is a "no".
    return false;
  }
}

/** "eu-1 -> ghost-1 (127.0.0.1:5000) -> <here>": where the call went, ending where it is now. */
export function describeRoute(route: readonly Hop[], here: string): string {
  if (route.length === 0) return here;
  return [route[0].from, ...route.map((h) => `${h.to} (${h.endpoint})`)].join(" -> ") + ` -> ${here}`;
}

/**
 * The metadata for forwarding a call that came along `route` from `here` to `target`; refuses
 * (FAILED_PRECONDITION, naming the chain) a call that already passed `here` or took MAX_HOPS.
 */
export function nextHop(
  what: string,
  route: readonly Hop[],
  here: string,
  target: { name: string; endpoint: string },
): Record<string, string> {
  const chain = describeRoute(route, here);
  if (route.some((h) => h.from === here)) {
    throw precondition(
      `${what} came back to ${here} along ${chain} and would go on to ${target.name} at ${target.endpoint}: ` +
        `the catalog's datacenter records form a forwarding loop (one datacenter's endpoint is another's); ` +
        `check the endpoints with \`gci world status\` and fix or delete the wrong datacenter record`,
    );
  }
  if (route.length >= MAX_HOPS) {
    throw precondition(
      `${what} was forwarded ${route.length} times (${chain}) and would go on to ${target.name} at ` +
        `${target.endpoint}: at most ${MAX_HOPS} forwards are allowed; the catalog's datacenter records ` +
        `disagree, check them with \`gci world status\``,
    );
  }
  const next: Hop[] = [...route, { from: here, to: target.name, endpoint: target.endpoint }];
  return { [HOPS_KEY]: String(next.length), [VIA_KEY]: JSON.stringify(next) };
}

/** What a forward needs of the call it forwards: its metadata, which carries the route. */
export type Incoming = Pick<grpc.ServerUnaryCall<unknown, unknown>, "metadata">;

/** What forwarding needs of the cluster manager doing it. */
export interface ForwardFrom {
  /** The datacenter forwarding, "here". */
  readonly name: string;
  readonly catalog: Catalog;
  readonly log: Logger;
}

/** The catalog's record of `datacenter`, which owns what `what` is about; NOT_FOUND naming the known ones. */
export async function owningDatacenter(
  catalog: Catalog,
  datacenter: string,
  what: string,
): Promise<DatacenterRecord> {
  const dc = await catalog.getDatacenter(datacenter);
  if (dc) return dc;
  const known = (await catalog.listDatacenters()).map((d) => d.name).join(", ");
  throw notFound(
    `datacenter "${datacenter}" of ${what} is not in the catalog (known: ${known}): check the name, ` +
      `or register the datacenter with \`gci world up\``,
  );
}

/**
 * The one way a call goes to the datacenter that owns its subject: `target` (a record, or a
 * name looked up in the catalog, see owningDatacenter) gets the call one hop further along its
 * route (nextHop refuses loops), `guard` runs once the route is known good, and a failure to
 * reach it is UNAVAILABLE naming it; the owner's own answers (NOT_FOUND, ...) pass unchanged.
 */
export async function forwardTo<T>(
  from: ForwardFrom,
  call: Incoming,
  what: string,
  target: DatacenterRecord | string,
  send: (client: ClusterClient) => Promise<T>,
  guard?: () => void,
): Promise<T> {
  const dc = typeof target === "string" ? await owningDatacenter(from.catalog, target, what) : target;
  const metadata = nextHop(what, routeOf(call.metadata), from.name, dc);
  from.log.info("rpc.forwarded", { what, to: dc.name, endpoint: dc.endpoint, hops: metadata[HOPS_KEY] });
  guard?.();
  const client = new ClusterClient(dc.endpoint, { metadata });
  try {
    return await send(client);
  } catch (e) {
    if (GciError.isInstance(e) && e.code !== "UNAVAILABLE") throw e;
    throw unavailable(`cluster manager of ${dc.name} at ${dc.endpoint} did not answer ${what}: ${String(e)}`);
  } finally {
    client.close();
  }
}
