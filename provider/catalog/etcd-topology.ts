/** The etcd catalog's topology records: regions, datacenters and their heartbeats. */

import { DATACENTERS, REGIONS, datacenterKey, regionKey } from "./etcd-keys";
import type { EtcdStore } from "./etcd-store";
import { datacenterOrder } from "./order";
import type { DatacenterRecord } from "./types";
import { checkDatacenter, checkHeartbeat, checkName, unknownDatacenter } from "./validate";

export function putRegion(s: EtcdStore, name: string): Promise<void> {
  return s.run(`put region ${JSON.stringify(name)}`, async () => {
    checkName("region name", name);
    await s.putIfAbsent(regionKey(name), { name });
  });
}

export function listRegions(s: EtcdStore): Promise<string[]> {
  return s.run("list regions", async () =>
    (await s.list<{ name: string }>(REGIONS)).map((r) => r.name).sort(),
  );
}

export function putDatacenter(s: EtcdStore, dc: DatacenterRecord): Promise<void> {
  return s.run(`put datacenter ${JSON.stringify(dc?.name)}`, async () => {
    const d = checkDatacenter(dc);
    const region = regionKey(d.region);
    const value = JSON.stringify(d);
    // One transaction, so a datacenter never exists without its region.
    await s.ns
      .if(region, "Create", "==", 0)
      .then(
        s.ns.put(region).value(JSON.stringify({ name: d.region })),
        s.ns.put(datacenterKey(d.name)).value(value),
      )
      .else(s.ns.put(datacenterKey(d.name)).value(value))
      .commit();
  });
}

export function getDatacenter(s: EtcdStore, name: string): Promise<DatacenterRecord | undefined> {
  return s.run(`get datacenter ${JSON.stringify(name)}`, async () => {
    checkName("datacenter name", name);
    return s.getChecked(datacenterKey(name), "datacenter", checkDatacenter);
  });
}

export function listDatacenters(s: EtcdStore, region?: string): Promise<DatacenterRecord[]> {
  return s.run("list datacenters", async () => {
    if (region !== undefined) checkName("region name", region);
    const all = await s.listChecked(DATACENTERS, "datacenter", checkDatacenter);
    return all.filter((d) => region === undefined || d.region === region).sort(datacenterOrder);
  });
}

export function deleteDatacenter(s: EtcdStore, name: string): Promise<void> {
  return s.run(`delete datacenter ${JSON.stringify(name)}`, async () => {
    checkName("datacenter name", name);
    await s.ns.delete().key(datacenterKey(name));
  });
}

export function heartbeat(s: EtcdStore, name: string, at: number): Promise<void> {
  return s.run(`record a heartbeat of datacenter ${JSON.stringify(name)}`, async () => {
    checkHeartbeat(name, at);
    await s.cas<DatacenterRecord, void>(datacenterKey(name), (cur) => {
      if (!cur) throw unknownDatacenter(name);
      return { write: { ...cur, heartbeatAt: at }, result: undefined };
    });
  });
}
