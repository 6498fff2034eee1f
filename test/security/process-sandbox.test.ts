/**
 * Issue 10, item 5 (process instances): each instance runs as a uid of its own with no
 * supplementary groups, in IPC and network namespaces of its own (only its declared ports
 * forwarded from the host's 127.0.0.1), and with a cap on the processes it may hold.
 */

import { execFileSync } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { InstanceHandle, ProcessDriver } from "../../provider/cluster/vm";
import { DEFAULT_UID_DIR, UID_BASE } from "../../provider/cluster/vm/uid";
import { testWorld, TestWorld } from "../support/world";
import {
  entrypointOf,
  imageWith,
  instanceProcesses,
  processFixture,
  ProcessFixture,
  runScript,
  specFor,
  statusField,
} from "./process-helpers";

/** Listening TCP ports of the network namespace whose /proc/net/tcp text this is. */
function listeningPorts(procNetTcp: string): number[] {
  return procNetTcp
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[3] === "0A")
    .map((fields) => parseInt(fields[1].split(":")[1], 16));
}

/** A TCP server on the host's 127.0.0.1 that counts the connections it gets. */
async function countingServer(): Promise<{ port: number; connections: () => number; close: () => void }> {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    socket.end("canary\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => server.close(),
  };
}

/** A port on the host nothing listens on now. */
async function unusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("the process sandbox", () => {
  let fixture: ProcessFixture;
  const driver = new ProcessDriver();

  beforeAll(async () => {
    fixture = await processFixture("sandbox");
  }, 300_000);

  afterAll(() => {
    if (fixture) fs.rmSync(fixture.tmp, { recursive: true, force: true });
  });

  describe("identity", () => {
    it("gives each instance a uid and gid of its own, and takes the uid back when it stops", async () => {
      const specs = [specFor(fixture), specFor(fixture)];
      const handles: InstanceHandle[] = [];
      try {
        for (const spec of specs) handles.push(await driver.start(spec));
        await Promise.all(handles.map((h) => driver.waitReady(h, 30_000)));
        const ids = await Promise.all(
          handles.map(async (h) => {
            const entry = await entrypointOf(h);
            return {
              uid: statusField(entry, "Uid").split(/\s+/),
              gid: statusField(entry, "Gid").split(/\s+/),
            };
          }),
        );
        const uids = ids.map((id) => Number(id.uid[0]));
        expect(uids[0]).not.toBe(uids[1]);
        for (const [i, id] of ids.entries()) {
          expect(uids[i]).toBeGreaterThanOrEqual(UID_BASE);
          expect(id.uid).toEqual(Array(4).fill(String(uids[i])));
          expect(id.gid).toEqual(Array(4).fill(String(uids[i])));
          expect(fs.readFileSync(path.join(DEFAULT_UID_DIR, String(uids[i])), "utf8")).toBe(specs[i].runDir);
        }
        await Promise.all(handles.map((h) => driver.stop(h)));
        for (const uid of uids) expect(fs.existsSync(path.join(DEFAULT_UID_DIR, String(uid)))).toBe(false);
      } finally {
        await Promise.all(handles.map((h) => driver.stop(h)));
      }
    }, 30_000);

    it("gives the entrypoint no supplementary groups, though the image's /etc/group names its user in 0 and 6", async () => {
      const imageDir = imageWith(fixture, "groups-image", {
        "etc/passwd": "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        "etc/group": "root:x:0:nobody\ndisk:x:6:nobody\nnogroup:x:65534:\n",
      });
      const spec = specFor(fixture, { imageDir, script: "busybox grep '^Groups:' /proc/self/status" });
      const { output } = await runScript(driver, spec);
      const groups = /^Groups:(.*)$/m.exec(output)?.[1].trim();
      expect(groups).toBe("");
    }, 30_000);
  });

  describe("network and IPC", () => {
    let world: TestWorld;

    beforeAll(async () => {
      world = await testWorld({ regions: { sec: ["sec-net-1"] } });
    }, 120_000);

    afterAll(async () => {
      await world?.stop();
    });

    it("runs the instance in IPC and network namespaces of its own", async () => {
      const handle = await driver.start(specFor(fixture));
      try {
        await driver.waitReady(handle, 30_000);
        const entry = await entrypointOf(handle);
        for (const ns of ["ipc", "net"]) {
          expect(`${ns}: ${fs.readlinkSync(`/proc/${entry}/ns/${ns}`)}`).not.toBe(
            `${ns}: ${fs.readlinkSync(`/proc/self/ns/${ns}`)}`,
          );
        }
        // The host's listening sockets of its forwarded ports (fds 3, ...) stay with the forwarders.
        const sockets = fs
          .readdirSync(`/proc/${entry}/fd`)
          .filter((fd) => Number(fd) > 2)
          .map((fd) => `${fd} -> ${fs.readlinkSync(`/proc/${entry}/fd/${fd}`)}`)
          .filter((link) => link.includes("socket:"));
        expect(sockets).toEqual([]);
      } finally {
        await driver.stop(handle);
      }
    }, 30_000);

    it("forwards the declared port from the host's 127.0.0.1 to the entrypoint listening on $PORT_80", async () => {
      const spec = specFor(fixture);
      const handle = await driver.start(spec);
      try {
        await driver.waitReady(handle, 30_000);
        expect(handle.addresses["80"]).toMatch(/^127\.0\.0\.1:\d+$/);
        const response = await fetch(`http://${handle.addresses["80"]}/`, {
          signal: AbortSignal.timeout(10_000),
        });
        expect((await response.text()).trim()).toBe(
          `name=${spec.id} datacenter=sec-dc digest=${fixture.image.digest}`,
        );
      } finally {
        await driver.stop(handle);
      }
    }, 40_000);

    it("cannot see the host's sockets in /proc/net, nor reach a server or a cluster manager on host 127.0.0.1", async () => {
      const canary = await countingServer();
      const manager = world.dc("sec-net-1").endpoint.replace(/^.*\/\//, "");
      try {
        const spec = specFor(fixture, {
          script: [
            "echo '--- tcp'; busybox cat /proc/net/tcp; echo '--- end'",
            `wget -q -O- http://127.0.0.1:${canary.port}/ 2>&1; echo "canary rc=$?"`,
            `wget -q -O- http://${manager}/ 2>&1; echo "manager rc=$?"`,
          ].join("\n"),
        });
        const { output } = await runScript(driver, spec);
        const tcp = /--- tcp\n([\s\S]*?)--- end/.exec(output)?.[1] ?? "";
        expect(listeningPorts(tcp)).not.toContain(canary.port);
        expect(canary.connections()).toBe(0);
        expect(output).not.toContain("canary\n");
        expect(output).toMatch(/canary rc=[1-9]/);
        // A manager that was reached answers (HTTP/1 to a gRPC port: an error reply, not a refusal).
        expect(output).toMatch(/Connection refused[\s\S]*manager rc=[1-9]/);
      } finally {
        canary.close();
      }
    }, 40_000);

    it("binding 0.0.0.0 in the instance binds nothing on the host", async () => {
      const port = await unusedPort();
      const spec = specFor(fixture, {
        script: `httpd -p 0.0.0.0:${port} -h /; echo GCI-READY; sleep 30`,
      });
      const handle = await driver.start(spec);
      try {
        await driver.waitReady(handle, 20_000);
        // The instance's httpd listens (in its own namespace) ...
        const inside = fs.readFileSync(`/proc/${await entrypointOf(handle)}/net/tcp`, "utf8");
        expect(listeningPorts(inside)).toContain(port);
        // ... and the host has no listener there.
        expect(listeningPorts(fs.readFileSync("/proc/self/net/tcp", "utf8"))).not.toContain(port);
      } finally {
        await driver.stop(handle);
      }
    }, 40_000);
  });

  describe("processes", () => {
    it("holds a fork bomb to pids.max: the instance hits the limit, the host still starts processes", async () => {
      // Bounded: 2000 sleepers wanted, far more than the instance may hold. The loop runs in a
      // subshell, which ends at the first fork refused; the entrypoint then says it is ready.
      const spec = specFor(fixture, {
        script: [
          '( i=0; while [ "$i" -lt 2000 ]; do sleep 60 & i=$((i+1)); done ) 2>/dev/null',
          "echo GCI-READY",
          "exec sleep 60",
        ].join("\n"),
        // Room for 2000 sleepers: the limit met must be the one on processes, not on memory.
        memoryMiB: 512,
      });
      const handle = await driver.start(spec);
      try {
        await driver.waitReady(handle, 30_000);
        const pidsDir = (handle.cgroups ?? []).find((d) => fs.existsSync(path.join(d, "pids.max")));
        expect(pidsDir).toBeDefined();
        const max = Number(fs.readFileSync(path.join(pidsDir!, "pids.max"), "utf8"));
        expect(max).toBeLessThan(2000);
        expect(instanceProcesses(handle).length).toBeLessThanOrEqual(max);
        expect(fs.readFileSync(path.join(pidsDir!, "pids.events"), "utf8")).toMatch(/^max [1-9]/m);
        // The host is fine: it still starts a process.
        expect(execFileSync("/bin/echo", ["host ok"], { encoding: "utf8" })).toBe("host ok\n");
      } finally {
        await driver.stop(handle);
      }
    }, 60_000);
  });
});
