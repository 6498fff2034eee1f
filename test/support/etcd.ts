/**
 * A real three-member etcd cluster on 127.0.0.1 for integration tests: free ports picked by
 * binding port 0, data in a fresh temp dir, members killed by stop() and on process exit.
 */

import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { Etcd3 } from "etcd3";

/** Options for {@link startEtcdCluster}. */
export interface EtcdClusterArgs {
  /**
   * Number of members.
   * @default 3
   */
  readonly members?: number;
  /**
   * Path of the etcd binary.
   * @default "etcd" on PATH (Debian's etcd-server installs /usr/bin/etcd)
   */
  readonly binary?: string;
  /**
   * How long to wait for the cluster to become healthy, in milliseconds.
   * @default 30000
   */
  readonly readyTimeoutMs?: number;
}

/** A running test cluster. */
export interface EtcdCluster {
  /** Client endpoints, "127.0.0.1:<port>", one per member, in member order. */
  readonly endpoints: readonly string[];
  /** The temp dir holding every member's data dir and log. */
  readonly dir: string;
  /**
   * Stops member i and waits for it to exit. SIGTERM (the default) lets a leader hand over
   * leadership first; SIGKILL is a crash, after which the others must elect a new leader.
   */
  stopMember(i: number, signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /** Starts member i again from its data dir and waits until it answers. */
  startMember(i: number): Promise<void>;
  /** Index of the member that is the raft leader, waiting up to 10 s for an election. */
  leader(): Promise<number>;
  /** Kills every member and removes the temp dir. */
  stop(): Promise<void>;
}

interface Member {
  readonly name: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  readonly logFile: string;
  proc?: ChildProcess;
  exited?: Promise<void>;
}

/** Members and temp dirs of every cluster this process started, for the exit hook. */
const live = new Set<ChildProcess>();
const dirs = new Set<string>();
let exitHookInstalled = false;

function killAll(): void {
  for (const p of live) p.kill("SIGKILL");
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}

/** Kills the members when this process exits, however it exits. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", killAll);
  // A signal ends the process without "exit" handlers; kill the members, then die of the
  // signal as before unless someone else handles it.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const handler = (): void => {
      killAll();
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, handler);
  }
}

/** Ports that were free a moment ago; all held open together so none repeats. */
async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        s.listen(0, "127.0.0.1", () => resolve());
      });
      ports.push((s.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function tail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Starts a fresh cluster and resolves once every member answers a linearizable read. */
export async function startEtcdCluster(args: EtcdClusterArgs = {}): Promise<EtcdCluster> {
  const count = args.members ?? 3;
  const binary = args.binary ?? "etcd";
  const readyTimeoutMs = args.readyTimeoutMs ?? 30000;
  installExitHook();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-etcd-"));
  dirs.add(dir);
  const ports = await freePorts(2 * count);
  const members: Member[] = Array.from({ length: count }, (_, i) => ({
    name: `m${i}`,
    clientPort: ports[2 * i],
    peerPort: ports[2 * i + 1],
    dataDir: path.join(dir, `m${i}`),
    logFile: path.join(dir, `m${i}.log`),
  }));
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(",");
  const token = `gci-test-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const endpoints = members.map((m) => `127.0.0.1:${m.clientPort}`);

  const withPdeathsig = process.platform === "linux" && spawnable("setpriv");
  const launch = (m: Member): void => {
    const log = fs.openSync(m.logFile, "a");
    // setpriv makes the kernel SIGKILL the member if this process dies without cleaning up
    // (SIGKILL, OOM), which no handler here could catch.
    const [cmd, ...pre] = withPdeathsig ? ["setpriv", "--pdeathsig", "KILL", "--", binary] : [binary];
    const proc = spawn(
      cmd,
      [
        ...pre,
        `--name=${m.name}`,
        `--data-dir=${m.dataDir}`,
        `--listen-client-urls=http://127.0.0.1:${m.clientPort}`,
        `--advertise-client-urls=http://127.0.0.1:${m.clientPort}`,
        `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
        `--initial-cluster=${initialCluster}`,
        `--initial-cluster-token=${token}`,
        // Ignored once the data dir exists, so a restarted member rejoins.
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-outputs=stderr",
        "--log-level=warn",
      ],
      { stdio: ["ignore", log, log] },
    );
    fs.closeSync(log);
    live.add(proc);
    m.proc = proc;
    m.exited = new Promise<void>((resolve) => {
      proc.once("exit", () => {
        live.delete(proc);
        resolve();
      });
      proc.once("error", () => {
        live.delete(proc);
        resolve();
      });
    });
  };

  /** Waits until member i serves a linearizable (quorum) read. */
  const waitReady = async (i: number): Promise<void> => {
    const m = members[i];
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (!running(m)) {
        throw new Error(
          `etcd member ${m.name} exited while starting (is ${binary} installed? apt-get install ` +
            `etcd-server). Its log ${m.logFile} ends:\n${tail(m.logFile)}`,
        );
      }
      // A fresh client per attempt: etcd3's circuit breaker would otherwise shut out a member
      // for 5 s after it refused three connections while booting.
      const client = new Etcd3({ hosts: `http://${endpoints[i]}` });
      try {
        await client.get("gci-test-health").options({ deadline: Date.now() + 1000 });
        return;
      } catch (e) {
        if (Date.now() > deadline) {
          throw new Error(
            `etcd member ${m.name} at ${endpoints[i]} did not become healthy within ${readyTimeoutMs} ms ` +
              `(${(e as Error).message}). Its log ${m.logFile} ends:\n${tail(m.logFile)}`,
          );
        }
      } finally {
        client.close();
      }
      await sleep(100);
    }
  };

  const stopMember = async (i: number, signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> => {
    const m = members[i];
    if (!m.proc || !running(m)) return;
    m.proc.kill(signal);
    const killer = setTimeout(() => m.proc?.kill("SIGKILL"), 5000);
    await m.exited;
    clearTimeout(killer);
  };

  const stopAll = async (): Promise<void> => {
    // SIGKILL: members stopping together lose quorum, and a graceful stop would then wait
    // out its leader-transfer timeout; the data is thrown away anyway.
    await Promise.all(members.map((_, i) => stopMember(i, "SIGKILL")));
    fs.rmSync(dir, { recursive: true, force: true });
    dirs.delete(dir);
  };

  try {
    if (!spawnable(binary)) {
      throw new Error(
        `etcd binary "${binary}" is not installed: apt-get install -y etcd-server etcd-client.`,
      );
    }
    members.forEach(launch);
    await Promise.all(members.map((_, i) => waitReady(i)));
  } catch (e) {
    await stopAll();
    throw e;
  }

  return {
    endpoints,
    dir,
    stopMember,
    startMember: async (i: number) => {
      const m = members[i];
      if (running(m)) return;
      launch(m);
      await waitReady(i);
    },
    leader: async () => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        for (let i = 0; i < count; i++) {
          if (!running(members[i])) continue;
          const client = new Etcd3({ hosts: `http://${endpoints[i]}` });
          try {
            const s = await client.maintenance.status({ deadline: Date.now() + 2000 });
            if (s.leader === s.header.member_id) return i;
          } catch {
            // A member that cannot answer is not the leader we want.
          } finally {
            client.close();
          }
        }
        if (Date.now() > deadline) {
          throw new Error(
            `no running member of the etcd cluster at ${endpoints.join(",")} became leader in 10 s.`,
          );
        }
        await sleep(100);
      }
    },
    stop: stopAll,
  };
}

function running(m: Member): boolean {
  return m.proc !== undefined && m.proc.exitCode === null && m.proc.signalCode === null;
}

/** False when `binary` is a path or name that resolves to nothing on PATH. */
function spawnable(binary: string): boolean {
  if (binary.includes("/")) return fs.existsSync(binary);
  return (process.env.PATH ?? "").split(path.delimiter).some((d) => d && fs.existsSync(path.join(d, binary)));
}
