import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ENGINE_VERSION, engineBinDir } from "../../provider/common/paths";
import { REPO, runGci } from "../support/engine";

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
      "dynamic host",
      "QEMU",
      "guest kernel",
      "busybox",
      "etcd",
      "cgroups",
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

  it("finds a plugin shim left by another version stale, and names set-up as the fix", async () => {
    // An engine folder like set-up's, but with an old language-host shim beside the CLI.
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), "gci-doctor-cache-"));
    try {
      const bin = path.join(cache, `engine-v${ENGINE_VERSION}`, "bin");
      fs.mkdirSync(bin, { recursive: true });
      fs.symlinkSync(path.join(engineBinDir(), "pulumi"), path.join(bin, "pulumi"));
      fs.copyFileSync(
        path.join(REPO, "scripts", "engine-shim"),
        path.join(bin, "pulumi-resource-pulumi-nodejs"),
      );
      fs.writeFileSync(path.join(bin, "pulumi-language-nodejs"), '#!/bin/sh\nexec old-host "$@"\n', {
        mode: 0o755,
      });
      const run = await runGci(["doctor", "--json"], 30_000, { ...process.env, GCI_CACHE: cache });
      const rows = JSON.parse(run.stdout) as Row[];
      expect(rows.find((r) => r.name === "dynamic host")?.status).toBe("ok");
      expect(rows.find((r) => r.name === "language host")).toMatchObject({
        status: "missing",
        detail: `${path.join(bin, "pulumi-language-nodejs")} is not this version's shim`,
        fix: "npm run setup",
      });
      expect(run.code).toBe(1);
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });

  it("prints a table for people", async () => {
    const run = await runGci(["doctor"]);
    expect(run.stdout.split("\n")[0]).toMatch(/^REQUIREMENT\s+STATUS\s+DETAIL\s+FIX$/);
    expect(run.stdout).toMatch(/^pulumi\s+ok\s+v3\.274\.1/m);
  });
});
