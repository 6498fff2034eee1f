import { randomBytes } from "crypto";
import * as fs from "fs";
import * as http from "http";
import type { AddressInfo } from "net";
import * as path from "path";
import { QemuDriver } from "../../provider/cluster/vm";
import type { InstanceHandle } from "../../provider/cluster/vm";
import { DEFAULT_UID_DIR, UID_BASE } from "../../provider/cluster/vm/uid";
import { consoleLine, ProbeGuests, probeGuests } from "./qemu-guests";

/** Uid, gid and supplementary groups of a live process, from /proc/<pid>/status. */
function credentials(pid: number): { uid: number; gid: number; groups: number[] } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => (status.match(new RegExp(`^${name}:\\s*(.*)$`, "m"))?.[1] ?? "").trim();
  return {
    uid: Number(field("Uid").split(/\s+/)[0]),
    gid: Number(field("Gid").split(/\s+/)[0]),
    groups: field("Groups") === "" ? [] : field("Groups").split(/\s+/).map(Number),
  };
}

/**
 * Issue 10, item 5 for QEMU: a guest is confined to its own forwarded ports, and each QEMU runs
 * as a uid of its own. Real QEMU guests of the probe-guest image report on their console
 * whether they reach an address on the host.
 */
describe("QEMU guests' network and uid", () => {
  let guests: ProbeGuests;
  const driver = new QemuDriver();

  beforeAll(async () => {
    guests = await probeGuests();
  }, 300_000);

  afterAll(() => guests?.remove());

  it("a guest cannot reach the host's loopback, and its forwarded port still answers", async () => {
    const secret = `host-loopback-${randomBytes(6).toString("hex")}`;
    let requests = 0;
    const server = http.createServer((_, response) => {
      requests++;
      response.end(`${secret}\n`);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    let handle: InstanceHandle | undefined;
    try {
      handle = await driver.start(guests.spec({ cmdline: `gci.probe.connect=10.0.2.2:${port}` }));
      await driver.waitReady(handle, 120_000);
      const started = handle;
      const line = await consoleLine(handle, /gci-probe: connect/, 60_000, () => driver.isRunning(started));
      // Before the fix the guest got the host-only page from 10.0.2.2, QEMU's alias of 127.0.0.1.
      expect(line).not.toContain(secret);
      expect(line).toMatch(/^gci-probe: connect 10\.0\.2\.2:\d+ failed/);
      expect(requests).toBe(0);
      const page = await fetch(`http://${handle.addresses["80"]}/`, { signal: AbortSignal.timeout(10_000) });
      expect((await page.text()).trim()).toBe(
        `name=${handle.id} datacenter=security-dc digest=${guests.image.digest}`,
      );
    } finally {
      if (handle !== undefined) await driver.stop(handle);
      server.close();
    }
  }, 240_000);

  it("every QEMU runs as a uid of its own with no other group, given back when it stops", async () => {
    const specs = [guests.spec(), guests.spec()];
    const handles: InstanceHandle[] = [];
    let seen: ReturnType<typeof credentials>[] = [];
    try {
      for (const spec of specs) handles.push(await driver.start(spec));
      // Ready: QEMU has dropped root (it does at the end of its set-up) and still writes its console.
      for (const handle of handles) await driver.waitReady(handle, 120_000);
      seen = handles.map((h) => credentials(h.pid));
      for (const [i, { uid, gid, groups }] of seen.entries()) {
        // Before the fix every QEMU ran as nobody (65534), all of them as the same user.
        expect(uid).toBeGreaterThanOrEqual(UID_BASE);
        expect(gid).toBe(uid);
        expect(groups.filter((g) => g !== gid)).toEqual([]);
        expect(fs.readFileSync(path.join(DEFAULT_UID_DIR, String(uid)), "utf8")).toBe(specs[i].runDir);
      }
      expect(seen[0].uid).not.toBe(seen[1].uid);
    } finally {
      for (const handle of handles) await driver.stop(handle);
    }
    for (const [i, { uid }] of seen.entries()) {
      expect(fs.existsSync(path.join(DEFAULT_UID_DIR, String(uid)))).toBe(false);
      // QEMU, no longer root, still took the QMP quit (a signal would be in its log).
      expect(fs.readFileSync(path.join(specs[i].runDir, "qemu.log"), "utf8")).not.toMatch(
        /terminating on signal/,
      );
    }
  }, 300_000);
});
