/** The SQLite catalog's topology records: regions, datacenters and their heartbeats. */

import type { DatacenterRecord } from "./types";
import { DatacenterRow, datacenterOut } from "./sqlite-rows";
import type { SqliteStore } from "./sqlite-store";
import { checkDatacenter, checkHeartbeat, checkName, unknownDatacenter } from "./validate";

export function putRegion(s: SqliteStore, name: string): Promise<void> {
  return s.run(`put region ${JSON.stringify(name)}`, () => {
    checkName("region name", name);
    s.stmt("INSERT OR IGNORE INTO regions (name) VALUES (?)").run(name);
  });
}

export function listRegions(s: SqliteStore): Promise<string[]> {
  return s.run("list regions", () =>
    (s.stmt("SELECT name FROM regions ORDER BY name").all() as { name: string }[]).map((r) => r.name),
  );
}

export function putDatacenter(s: SqliteStore, dc: DatacenterRecord): Promise<void> {
  return s.run(`put datacenter ${JSON.stringify(dc?.name)}`, () => {
    const d = checkDatacenter(dc);
    // One transaction, so a datacenter never exists without its region.
    s.immediate(() => {
      s.stmt("INSERT OR IGNORE INTO regions (name) VALUES (?)").run(d.region);
      s.stmt(
        `INSERT OR REPLACE INTO datacenters (name, region, endpoint, vcpus, memory_mib, heartbeat_at)
             VALUES (?, ?, ?, ?, ?, ?)`,
      ).run(d.name, d.region, d.endpoint, d.capacity.vcpus, d.capacity.memoryMiB, d.heartbeatAt);
    });
  });
}

export function getDatacenter(s: SqliteStore, name: string): Promise<DatacenterRecord | undefined> {
  return s.run(`get datacenter ${JSON.stringify(name)}`, () => {
    checkName("datacenter name", name);
    const row = s.stmt("SELECT * FROM datacenters WHERE name = ?").get(name) as DatacenterRow | undefined;
    return row && datacenterOut(row);
  });
}

export function listDatacenters(s: SqliteStore, region?: string): Promise<DatacenterRecord[]> {
  return s.run("list datacenters", () => {
    const rows =
      region === undefined
        ? s.stmt("SELECT * FROM datacenters ORDER BY name").all()
        : s
            .stmt("SELECT * FROM datacenters WHERE region = ? ORDER BY name")
            .all(checkName("region name", region));
    return s.all(rows, datacenterOut);
  });
}

export function deleteDatacenter(s: SqliteStore, name: string): Promise<void> {
  return s.run(`delete datacenter ${JSON.stringify(name)}`, () => {
    checkName("datacenter name", name);
    s.stmt("DELETE FROM datacenters WHERE name = ?").run(name);
  });
}

export function heartbeat(s: SqliteStore, name: string, at: number): Promise<void> {
  return s.run(`record a heartbeat of datacenter ${JSON.stringify(name)}`, () => {
    checkHeartbeat(name, at);
    const changed = s.stmt("UPDATE datacenters SET heartbeat_at = ? WHERE name = ?").run(at, name);
    if (changed.changes === 0) throw unknownDatacenter(name);
  });
}
