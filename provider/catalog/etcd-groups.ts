/**
 * The etcd catalog's VM groups and VMs. A group write that takes a datacenter's capacity is one
 * transaction guarded by the datacenter's allocation key (see readRoom), so two clients cannot
 * both spend the same free room.
 */

import type { Namespace } from "etcd3";

import { VMS, VM_GROUPS, allocKey, datacenterKey, vmGroupKey, vmKey } from "./etcd-keys";
import { EtcdStore, MAX_CAS_ROUNDS, casExhausted } from "./etcd-store";
import { checkGroupFits, checkGroupUpdate, groupGrows, groupUpdateStep, sameVmGroup } from "./groups";
import { vmGroupOrder, vmOrder } from "./order";
import type { CreatedVmGroup, DatacenterRecord, VmGroupRecord, VmRecord } from "./types";
import {
  checkId,
  checkName,
  checkVm,
  checkVmFilter,
  checkVmGroup,
  checkVmId,
  readBack,
  unknownDatacenter,
} from "./validate";

/** A datacenter's room as read by {@link readRoom}, with the guard and the bump of its allocation key. */
interface Room {
  readonly dc: DatacenterRecord;
  readonly groups: VmGroupRecord[];
  readonly guard: ReturnType<Namespace["if"]>;
  readonly bump: ReturnType<Namespace["put"]>;
}

/**
 * A datacenter's capacity and groups, read after its allocation key, with the guard that
 * holds only while neither the datacenter record nor the allocation key changed, and the
 * write that bumps the key. Any later capacity-taking write bumps it, so a transaction
 * under this guard commits only if no such write came in since these reads; deletes do not
 * bump it, and only free room, so missing one errs on the safe side.
 */
async function readRoom(s: EtcdStore, datacenter: string): Promise<Room> {
  const alloc = allocKey(datacenter);
  const dcKey = datacenterKey(datacenter);
  const allocated = await s.getOne<{ at: number }>(alloc);
  const dc = await s.getOne<DatacenterRecord>(dcKey);
  if (!dc) throw unknownDatacenter(datacenter);
  const groups = (await s.list<VmGroupRecord>(VM_GROUPS)).filter((g) => g.datacenter === datacenter);
  const guard = allocated
    ? s.ns.if(alloc, "Mod", "==", allocated.kv.mod_revision)
    : s.ns.if(alloc, "Create", "==", 0);
  return {
    dc: dc.value,
    groups,
    guard: guard.and(dcKey, "Mod", "==", dc.kv.mod_revision),
    bump: s.ns.put(alloc).value(JSON.stringify({ at: Date.now() })),
  };
}

export function putVmGroupIfAbsent(s: EtcdStore, group: VmGroupRecord): Promise<VmGroupRecord> {
  return s.run(`put VM group ${JSON.stringify(group?.requestId)}`, async () => {
    const g = checkVmGroup(group);
    const stored = await s.putIfAbsent(vmGroupKey(g.requestId), g);
    return readBack("VM group", g.requestId, checkVmGroup, stored);
  });
}

export function createVmGroup(s: EtcdStore, group: VmGroupRecord): Promise<CreatedVmGroup> {
  return s.run(`create VM group ${JSON.stringify(group?.requestId)}`, async () => {
    const g = checkVmGroup(group);
    const key = vmGroupKey(g.requestId);
    for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
      const room = await readRoom(s, g.datacenter);
      const stored = await s.getOne<VmGroupRecord>(key);
      // Equal to ours: our own commit, whose answer was lost and the operation rerun.
      if (stored) return { group: stored.value, created: sameVmGroup(stored.value, g) };
      checkGroupFits(room.dc, room.groups, g);
      const tx = await room.guard
        .and(key, "Create", "==", 0)
        .then(s.ns.put(key).value(JSON.stringify(g)), room.bump)
        .commit();
      if (tx.succeeded) return { group: g, created: true };
    }
    throw casExhausted(key);
  });
}

export function updateVmGroup(s: EtcdStore, expected: VmGroupRecord, next: VmGroupRecord): Promise<boolean> {
  return s.run(`update VM group ${JSON.stringify(expected?.requestId)}`, async () => {
    const e = checkVmGroup(expected);
    const n = checkVmGroup(next);
    checkGroupUpdate(e, n);
    const key = vmGroupKey(e.requestId);
    for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
      const room = groupGrows(e, n) ? await readRoom(s, n.datacenter) : undefined;
      const stored = await s.getOne<VmGroupRecord>(key);
      const step = groupUpdateStep(stored?.value, e, n);
      if (step !== "write" || !stored) return step === "done";
      const write = s.ns.put(key).value(JSON.stringify(n));
      const unchanged = stored.kv.mod_revision;
      let tx;
      if (room) {
        checkGroupFits(room.dc, room.groups, n);
        tx = await room.guard.and(key, "Mod", "==", unchanged).then(write, room.bump).commit();
      } else {
        tx = await s.ns.if(key, "Mod", "==", unchanged).then(write).commit();
      }
      if (tx.succeeded) return true;
    }
    throw casExhausted(key);
  });
}

export function getVmGroup(s: EtcdStore, requestId: string): Promise<VmGroupRecord | undefined> {
  return s.run(`get VM group ${JSON.stringify(requestId)}`, async () => {
    checkId("VM group request id", requestId);
    return s.getChecked(vmGroupKey(requestId), "VM group", checkVmGroup);
  });
}

export function listVmGroups(s: EtcdStore, datacenter?: string): Promise<VmGroupRecord[]> {
  return s.run("list VM groups", async () => {
    if (datacenter !== undefined) checkName("datacenter name", datacenter);
    const all = await s.listChecked(VM_GROUPS, "VM group", checkVmGroup);
    return all.filter((g) => datacenter === undefined || g.datacenter === datacenter).sort(vmGroupOrder);
  });
}

export function deleteVmGroup(s: EtcdStore, requestId: string): Promise<void> {
  return s.run(`delete VM group ${JSON.stringify(requestId)}`, async () => {
    checkId("VM group request id", requestId);
    await s.ns.delete().key(vmGroupKey(requestId));
  });
}

export function putVm(s: EtcdStore, vm: VmRecord): Promise<void> {
  return s.run(`put VM ${JSON.stringify(vm?.id)}`, async () => {
    const v = checkVm(vm);
    await s.ns.put(vmKey(v.id)).value(JSON.stringify(v));
  });
}

export function getVm(s: EtcdStore, id: string): Promise<VmRecord | undefined> {
  return s.run(`get VM ${JSON.stringify(id)}`, async () => {
    checkVmId("VM id", id);
    return s.getChecked(vmKey(id), "VM", checkVm);
  });
}

export function listVms(
  s: EtcdStore,
  filter?: { datacenter?: string; requestId?: string },
): Promise<VmRecord[]> {
  return s.run("list VMs", async () => {
    checkVmFilter(filter);
    const dc = filter?.datacenter;
    const req = filter?.requestId;
    const all = await s.listChecked(VMS, "VM", checkVm);
    return all
      .filter((v) => (dc === undefined || v.datacenter === dc) && (req === undefined || v.requestId === req))
      .sort(vmOrder);
  });
}

export function deleteVm(s: EtcdStore, id: string): Promise<void> {
  return s.run(`delete VM ${JSON.stringify(id)}`, async () => {
    checkVmId("VM id", id);
    await s.ns.delete().key(vmKey(id));
  });
}
