/** Which input changes of a VirtualMachineGroup need new VMs, and the engine's diff. */
import { sameCatalog } from "./topology";
import { Target, VmGroupInputs, VmGroupOutputs, same, targetOf } from "./vmgroup-types";

/**
 * True when VMs placed for the old target meet the new one: the same target, or an old one
 * pinned to a datacenter the new one accepts (datacenter "eu-1" -> region "eu"). An imported
 * group is read as pinned to its datacenter, so a program naming its region matches it.
 */
function targetHolds(old: Target, news: Target, regionOf: (datacenter: string) => string | undefined) {
  if (same(targetOf(old), targetOf(news))) return true;
  if (old.datacenter === undefined) return false;
  return (
    (news.datacenter === undefined || news.datacenter === old.datacenter) &&
    (news.region === undefined || news.region === regionOf(old.datacenter))
  );
}

/**
 * Why a change of inputs needs new VMs: the properties that force a replacement. `regionOf`
 * names the region of a datacenter the old target pinned.
 */
export function replaceReasons(
  olds: Partial<VmGroupOutputs> & Target,
  news: VmGroupInputs,
  oldsAreOutputs: boolean,
  regionOf: (datacenter: string) => string | undefined,
): string[] {
  const out: string[] = [];
  if (olds.image !== undefined && olds.image !== news.image) out.push("image");
  if (olds.machineSize !== undefined && olds.machineSize !== news.machineSize) out.push("machineSize");
  const oldTarget = oldsAreOutputs ? (olds.target ?? {}) : olds;
  if (!targetHolds(oldTarget, news, regionOf)) {
    if ((oldTarget.region ?? null) !== (news.region ?? null)) out.push("region");
    if ((oldTarget.datacenter ?? null) !== (news.datacenter ?? null)) out.push("datacenter");
  }
  if (olds.catalog && news.catalog && olds.catalog.catalog !== news.catalog.catalog) out.push("catalog");
  return out;
}

/** The engine's diff: what forces new VMs, and whether anything changed at all. */
export async function diffVmGroup(olds: VmGroupOutputs, news: VmGroupInputs) {
  // The old target pinned a datacenter: the group runs there, in olds.region.
  const replaces = replaceReasons(olds, news, true, () => olds.region);
  const updates = [
    ...(olds.count !== news.count ? ["count"] : []),
    ...(!same(olds.ports, news.ports) ? ["ports"] : []),
    ...(!sameCatalog(olds.catalog, news.catalog) ? ["catalog"] : []),
    ...(!same(olds.target, targetOf(news)) ? ["target"] : []),
    ...(olds.timeoutSeconds !== news.timeoutSeconds ? ["timeoutSeconds"] : []),
    ...(olds.complete === false ? ["count"] : []),
  ];
  // New VMs come up before the old ones go: never delete first.
  return { changes: replaces.length + updates.length > 0, replaces, deleteBeforeReplace: false };
}
