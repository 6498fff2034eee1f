/** The catalog suite on a SQLite file, plus processes racing on one file. */

import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

import { SqliteCatalog, SQLITE_SCHEMA_VERSION } from "../../../provider/catalog";
import { describeCatalog, digestOf } from "./catalog.suite";

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-sqlite-"));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describeCatalog("SqliteCatalog", async (store) => new SqliteCatalog({ path: path.join(dir, `${store}.db`) }));

describe("SqliteCatalog file", () => {
  it("uses WAL, creates missing directories, and stamps the schema version", async () => {
    const file = path.join(dir, "nested", "deeper", "catalog.db");
    const cat = new SqliteCatalog({ path: file });
    await cat.putRegion("eu");
    await cat.close();
    const again = new SqliteCatalog({ path: file });
    expect(await again.listRegions()).toEqual(["eu"]);
    await again.close();
    const Database = (await import("better-sqlite3")).default;
    const db = new Database(file, { readonly: true });
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(db.pragma("user_version", { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    db.close();
  });

  it("refuses a file from a newer GCI, naming the versions", async () => {
    const file = path.join(dir, "future.db");
    const Database = (await import("better-sqlite3")).default;
    const db = new Database(file);
    db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`);
    db.close();
    expect(() => new SqliteCatalog({ path: file })).toThrow(
      expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringContaining(file) }),
    );
  });

  it("refuses a relative path", () => {
    expect(() => new SqliteCatalog({ path: "catalog.db" })).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining('"catalog.db"') }),
    );
  });

  it("gives each lease to exactly one of 4 racing processes", async () => {
    const file = path.join(dir, "race.db");
    const rounds = 100;
    const racer = path.join(__dirname, "sqlite-racer.ts");
    const children = Array.from({ length: 4 }, (_, i) =>
      spawn(process.execPath, ["-r", "tsx/cjs", racer, file, `p${i}`, String(rounds)], {
        cwd: path.join(__dirname, "..", "..", ".."),
        stdio: ["pipe", "pipe", "pipe"],
      }),
    );
    const outputs = children.map((child) => {
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      const ready = new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (out.includes("ready\n")) resolve();
        };
        child.stdout.on("data", check);
        child.once("exit", (code) => reject(new Error(`racer exited early (${code}): ${err}`)));
      });
      const done = new Promise<string>((resolve, reject) =>
        child.once("exit", (code) =>
          code === 0 ? resolve(out) : reject(new Error(`racer failed (${code}): ${err}`)),
        ),
      );
      return { ready, done };
    });
    // A stuck child fails the test instead of hanging it.
    const watchdog = setTimeout(() => children.forEach((c) => c.kill("SIGKILL")), 30_000);
    try {
      // Every child has the file open before any of them starts, so they really race.
      await Promise.all(outputs.map((o) => o.ready));
      const t0 = Date.now() + 100;
      for (const child of children) child.stdin.end(`go ${t0}\n`);
      const results = (await Promise.all(outputs.map((o) => o.done))).map(
        (out) =>
          JSON.parse(out.trim().split("\n").pop()!) as { holder: string; won: number[]; groups: number[] },
      );

      const cat = new SqliteCatalog({ path: file });
      for (let k = 0; k < rounds; k++) {
        const winners = results.filter((r) => r.won.includes(k)).map((r) => r.holder);
        expect(winners).toHaveLength(1);
        expect((await cat.getLease(digestOf(`race-${k}`), "dc-a"))!.holder).toBe(winners[0]);
        const stored = (await cat.getVmGroup(`race-${k}`))!.count;
        for (const r of results) expect(r.groups[k]).toBe(stored);
      }
      expect(await cat.listVmGroups()).toHaveLength(rounds);
      await cat.close();
    } finally {
      clearTimeout(watchdog);
      for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
