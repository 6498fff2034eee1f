/**
 * The SQLite catalog's VM groups and VMs. Group writes that take a datacenter's capacity run in
 * BEGIN IMMEDIATE transactions, so the capacity read and the write cannot interleave with another
 * process's.
 */

import { checkGroupFits, checkGroupUpdate, groupGrows, groupUpdateStep } from "./groups";
import type { CreatedVmGroup, VmGroupRecord, VmRecord } from "./types";
import { DatacenterRow, VmGroupRow, VmRow, toDatacenter, toVmGroup, vmGroupOut, vmOut } from "./sqlite-rows";
import type { SqliteStore } from "./sqlite-store";
import {
  checkId,
  checkName,
  checkVm,
  checkVmFilter,
  checkVmGroup,
  checkVmId,
  unknownDatacenter,
} from "./validate";

const INSERT_GROUP = `INSERT INTO vm_groups (request_id, datacenter, digest, count, vcpus, memory_mib, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)`;

function insertGroup(s: SqliteStore, g: VmGroupRecord): void {
  s.stmt(INSERT_GROUP).run(g.requestId, g.datacenter, g.digest, g.count, g.vcpus, g.memoryMiB, g.createdAt);
}

function vmGroupRow(s: SqliteStore, requestId: string): VmGroupRow | undefined {
  return s.stmt("SELECT * FROM vm_groups WHERE request_id = ?").get(requestId) as VmGroupRow | undefined;
}

/** Inside a write transaction: RESOURCE_EXHAUSTED unless `g` fits beside its datacenter's other groups. */
function checkRoom(s: SqliteStore, g: VmGroupRecord): void {
  const dc = s.stmt("SELECT * FROM datacenters WHERE name = ?").get(g.datacenter) as
    DatacenterRow | undefined;
  if (!dc) throw unknownDatacenter(g.datacenter);
  const groups = s.stmt("SELECT * FROM vm_groups WHERE datacenter = ?").all(g.datacenter) as VmGroupRow[];
  checkGroupFits(toDatacenter(dc), groups.map(toVmGroup), g);
}

export function putVmGroupIfAbsent(s: SqliteStore, group: VmGroupRecord): Promise<VmGroupRecord> {
  return s.run(`put VM group ${JSON.stringify(group?.requestId)}`, () => {
    const g = checkVmGroup(group);
    return s.immediate((): VmGroupRecord => {
      const row = vmGroupRow(s, g.requestId);
      if (row) return vmGroupOut(row);
      insertGroup(s, g);
      return g;
    });
  });
}

export function createVmGroup(s: SqliteStore, group: VmGroupRecord): Promise<CreatedVmGroup> {
  return s.run(`create VM group ${JSON.stringify(group?.requestId)}`, () => {
    const g = checkVmGroup(group);
    // IMMEDIATE: the write lock is held from the capacity read to the insert, so two
    // processes cannot both see the same free room.
    return s.immediate((): CreatedVmGroup => {
      const stored = vmGroupRow(s, g.requestId);
      if (stored) return { group: toVmGroup(stored), created: false };
      checkRoom(s, g);
      insertGroup(s, g);
      return { group: g, created: true };
    });
  });
}

export function updateVmGroup(
  s: SqliteStore,
  expected: VmGroupRecord,
  next: VmGroupRecord,
): Promise<boolean> {
  return s.run(`update VM group ${JSON.stringify(expected?.requestId)}`, () => {
    const e = checkVmGroup(expected);
    const n = checkVmGroup(next);
    checkGroupUpdate(e, n);
    return s.immediate((): boolean => {
      const stored = vmGroupRow(s, e.requestId);
      const step = groupUpdateStep(stored && toVmGroup(stored), e, n);
      if (step !== "write") return step === "done";
      if (groupGrows(e, n)) checkRoom(s, n);
      s.stmt(
        `UPDATE vm_groups SET digest = ?, count = ?, vcpus = ?, memory_mib = ?, created_at = ?
               WHERE request_id = ?`,
      ).run(n.digest, n.count, n.vcpus, n.memoryMiB, n.createdAt, n.requestId);
      return true;
    });
  });
}

export function getVmGroup(s: SqliteStore, requestId: string): Promise<VmGroupRecord | undefined> {
  return s.run(`get VM group ${JSON.stringify(requestId)}`, () => {
    checkId("VM group request id", requestId);
    const row = vmGroupRow(s, requestId);
    return row && vmGroupOut(row);
  });
}

export function listVmGroups(s: SqliteStore, datacenter?: string): Promise<VmGroupRecord[]> {
  return s.run("list VM groups", () => {
    const rows =
      datacenter === undefined
        ? s.stmt("SELECT * FROM vm_groups ORDER BY request_id").all()
        : s
            .stmt("SELECT * FROM vm_groups WHERE datacenter = ? ORDER BY request_id")
            .all(checkName("datacenter name", datacenter));
    return s.all(rows, vmGroupOut);
  });
}

export function deleteVmGroup(s: SqliteStore, requestId: string): Promise<void> {
  return s.run(`delete VM group ${JSON.stringify(requestId)}`, () => {
    checkId("VM group request id", requestId);
    s.stmt("DELETE FROM vm_groups WHERE request_id = ?").run(requestId);
  });
}

export function putVm(s: SqliteStore, vm: VmRecord): Promise<void> {
  return s.run(`put VM ${JSON.stringify(vm?.id)}`, () => {
    const v = checkVm(vm);
    s.db
      .prepare(
        `INSERT OR REPLACE INTO vms (id, request_id, datacenter, digest, state, addresses, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(v.id, v.requestId, v.datacenter, v.digest, v.state, JSON.stringify(v.addresses), v.updatedAt);
  });
}

export function getVm(s: SqliteStore, id: string): Promise<VmRecord | undefined> {
  return s.run(`get VM ${JSON.stringify(id)}`, () => {
    checkVmId("VM id", id);
    const row = s.stmt("SELECT * FROM vms WHERE id = ?").get(id) as VmRow | undefined;
    return row && vmOut(row);
  });
}

export function listVms(
  s: SqliteStore,
  filter?: { datacenter?: string; requestId?: string },
): Promise<VmRecord[]> {
  return s.run("list VMs", () => {
    checkVmFilter(filter);
    const where: string[] = [];
    const params: string[] = [];
    if (filter?.datacenter !== undefined) {
      where.push("datacenter = ?");
      params.push(filter.datacenter);
    }
    if (filter?.requestId !== undefined) {
      where.push("request_id = ?");
      params.push(filter.requestId);
    }
    const sql = `SELECT * FROM vms${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY id`;
    return s.all(s.stmt(sql).all(...params), vmOut);
  });
}

export function deleteVm(s: SqliteStore, id: string): Promise<void> {
  return s.run(`delete VM ${JSON.stringify(id)}`, () => {
    checkVmId("VM id", id);
    s.stmt("DELETE FROM vms WHERE id = ?").run(id);
  });
}
