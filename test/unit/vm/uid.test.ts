import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { claimUid, releaseUid, UID_BASE, UID_SLOTS } from "../../../provider/cluster/vm/uid";

describe("instance uids", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-uids-"));
  const run = (name: string): string => {
    const d = path.join(dir, "runs", name);
    fs.mkdirSync(d, { recursive: true });
    return d;
  };
  const claims = path.join(dir, "claims");
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("gives each instance its own uid, in range, and the same one again when asked twice", () => {
    const uids = Array.from({ length: 50 }, (_, i) => claimUid(run(`i${i}`), claims));
    expect(new Set(uids).size).toBe(50);
    for (const uid of uids) {
      expect(uid).toBeGreaterThanOrEqual(UID_BASE);
      expect(uid).toBeLessThan(UID_BASE + UID_SLOTS);
    }
    expect(claimUid(run("i7"), claims)).toBe(uids[7]);
  });

  it("frees a uid on release, and only for its holder", () => {
    const a = run("a");
    const uid = claimUid(a, claims);
    releaseUid(uid, run("someone-else"), claims);
    expect(fs.existsSync(path.join(claims, String(uid)))).toBe(true);
    releaseUid(uid, a, claims);
    expect(fs.existsSync(path.join(claims, String(uid)))).toBe(false);
  });

  it("takes over a claim whose instance folder is gone", () => {
    const gone = run("gone");
    const uid = claimUid(gone, claims);
    fs.rmSync(gone, { recursive: true });
    // A new instance whose search starts at that slot: plant the stale claim where it would look.
    const fresh = run("fresh");
    const start = claimUid(fresh, claims);
    releaseUid(start, fresh, claims);
    fs.renameSync(path.join(claims, String(uid)), path.join(claims, String(start)));
    fs.writeFileSync(path.join(claims, String(start)), gone);
    expect(claimUid(fresh, claims)).toBe(start);
    expect(fs.readFileSync(path.join(claims, String(start)), "utf8")).toBe(fresh);
  });
});
