import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { runGci } from "../support/engine";

interface Row {
  name: string;
  status: string;
  detail: string;
  fix: string;
}

/** `gci doctor` after set-up, and with QEMU hidden from PATH. */
describe("gci doctor", () => {
  it("reports every requirement ok after set-up and exits 0", async () => {
    const run = await runGci(["doctor", "--json"]);
    const rows: Row[] = JSON.parse(run.stdout);
    expect(rows.map((r) => r.name)).toEqual([
      "node",
      "pulumi",
      "language host",
      "launcher",
      "QEMU",
      "guest kernel",
      "busybox",
      "etcd",
      "state folder",
    ]);
    expect(rows.filter((r) => r.status === "missing")).toEqual([]);
    expect(run.code).toBe(0);
  });

  it("names the fix and exits 1 when QEMU is missing", async () => {
    // A PATH holding everything but qemu-system-x86_64: links to the tools doctor looks for.
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), "gci-doctor-"));
    try {
      for (const tool of ["busybox", "etcd", "node"]) {
        const found = (process.env.PATH ?? "")
          .split(":")
          .map((d) => path.join(d, tool))
          .find((p) => fs.existsSync(p));
        if (found) fs.symlinkSync(found, path.join(bin, tool));
      }
      const run = await runGci(["doctor", "--json"], 30_000, { ...process.env, PATH: bin });
      const qemu = (JSON.parse(run.stdout) as Row[]).find((r) => r.name === "QEMU");
      expect(qemu).toMatchObject({ status: "missing", fix: "apt-get install -y qemu-system-x86" });
      expect(run.code).toBe(1);
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  it("prints a table for people", async () => {
    const run = await runGci(["doctor"]);
    expect(run.stdout.split("\n")[0]).toMatch(/^REQUIREMENT\s+STATUS\s+DETAIL\s+FIX$/);
    expect(run.stdout).toMatch(/^pulumi\s+ok\s+v3\.274\.1/m);
  });
});
