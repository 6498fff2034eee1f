/** openCatalog: which URL opens which engine, and how a bad URL is reported. */

import * as fs from "fs";
import * as os from "os";
import * as path from "path";

import { EtcdCatalog, SqliteCatalog, openCatalog } from "../../../provider/catalog";

describe("openCatalog", () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-open-"));
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each([`sqlite:`, `sqlite://`])("opens %s<abs path> as a SQLite file", async (scheme) => {
    const file = path.join(dir, `${scheme.length}.db`);
    const cat = await openCatalog(`${scheme}${file}`);
    expect(cat).toBeInstanceOf(SqliteCatalog);
    expect((cat as SqliteCatalog).path).toBe(file);
    await cat.putRegion("eu");
    expect(await cat.listRegions()).toEqual(["eu"]);
    await cat.close();
  });

  it("opens etcd://host:port,... with the default prefix", async () => {
    const cat = await openCatalog("etcd://10.0.0.1:2379,10.0.0.2:2379,[::1]:2379");
    expect(cat).toBeInstanceOf(EtcdCatalog);
    expect((cat as EtcdCatalog).endpoints).toEqual(["10.0.0.1:2379", "10.0.0.2:2379", "[::1]:2379"]);
    expect((cat as EtcdCatalog).prefix).toBe("/gci/v1/");
    await cat.close();
  });

  it("takes a key prefix after the endpoints", async () => {
    const cat = (await openCatalog("etcd://127.0.0.1:2379/worlds/dev")) as EtcdCatalog;
    expect(cat.prefix).toBe("/worlds/dev/");
    await cat.close();
  });

  it.each([
    "catalog.db",
    "sqlite:catalog.db",
    "sqlite:relative/catalog.db",
    "postgres://db:5432/gci",
    "etcd://",
    "etcd://hostonly",
    "etcd://a:2379,b",
    "",
  ])("rejects %p, naming it and the accepted forms", async (url) => {
    await expect(openCatalog(url)).rejects.toEqual(
      expect.objectContaining({
        code: "INVALID_ARGUMENT",
        message: expect.stringMatching(
          new RegExp(
            `"${url.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}".*sqlite:/abs/path/catalog\\.db.*etcd://host:port`,
          ),
        ),
      }),
    );
  });
});
