import * as fs from "fs";
import * as path from "path";
import {
  CATALOG_OUTPUT_SCHEMA,
  catalogOutputProblems,
  checkCatalogOutput,
} from "../../../provider/pulumi/dynamic/topology";
import { UNKNOWN } from "../../../provider/pulumi/dynamic/inputs";

const schema = JSON.parse(
  fs.readFileSync(path.join(__dirname, "..", "..", "..", "schema", "catalog-output.schema.json"), "utf8"),
);

const valid = {
  schema: CATALOG_OUTPUT_SCHEMA,
  catalog: "sqlite:/var/lib/gci/catalog.db",
  regions: ["us", "eu"],
  datacenters: [
    { name: "us-1", region: "us", endpoint: "127.0.0.1:7001" },
    { name: "eu-1", region: "eu", endpoint: "10.0.0.2:7001" },
  ],
};

/** A JSON Schema validator (ajv, draft-07), to hold the hand-written checks to the published schema. */
function schemaAccepts(value: unknown): boolean {
  const Ajv = require("ajv");
  return new Ajv({ allErrors: true }).compile(schema)(value) as boolean;
}

describe("the catalog stack output", () => {
  it("accepts a well-formed output, as the JSON Schema does", () => {
    expect(catalogOutputProblems(valid)).toEqual([]);
    expect(schemaAccepts(valid)).toBe(true);
    expect(checkCatalogOutput({ ...valid, etcdMembers: 3 })).toMatchObject(valid);
  });

  const malformed: [string, unknown, string[]][] = [
    ["not an object", "sqlite:/x", ["catalog"]],
    ["the wrong schema version", { ...valid, schema: "gci.catalog/v0" }, ["catalog.schema"]],
    ["a catalog location of another kind", { ...valid, catalog: "mysql://db" }, ["catalog.catalog"]],
    [
      "no regions",
      { ...valid, regions: [] },
      ["catalog.regions", "catalog.datacenters[0].region", "catalog.datacenters[1].region"],
    ],
    [
      "a datacenter without endpoint",
      { ...valid, datacenters: [{ name: "us-1", region: "us" }] },
      ["catalog.datacenters[0].endpoint"],
    ],
    [
      "a bad endpoint and a bad name",
      { ...valid, datacenters: [{ name: "-x", region: "us", endpoint: "nowhere" }] },
      ["catalog.datacenters[0].name", "catalog.datacenters[0].endpoint"],
    ],
    [
      "everything missing",
      {},
      ["catalog.schema", "catalog.catalog", "catalog.regions", "catalog.datacenters"],
    ],
  ];
  it.each(malformed)(
    "reports every problem of %s at once, and the schema refuses it too",
    (_what, value, properties) => {
      const problems = catalogOutputProblems(value);
      expect(problems.map((p) => p.property)).toEqual(properties);
      for (const p of problems) expect(p.reason.length).toBeGreaterThan(10);
      expect(schemaAccepts(value)).toBe(false);
      expect(() => checkCatalogOutput(value)).toThrow(/the catalog stack output is malformed/);
    },
  );

  it("reports what only the hand-written checks can: unlisted regions and repeated names", () => {
    const value = {
      ...valid,
      datacenters: [
        { name: "us-1", region: "us", endpoint: "127.0.0.1:7001" },
        { name: "us-1", region: "ap", endpoint: "127.0.0.1:7002" },
      ],
    };
    expect(schemaAccepts(value)).toBe(true);
    expect(catalogOutputProblems(value).map((p) => p.reason)).toEqual([
      'datacenter "us-1" is listed twice: names are unique in a world',
      'region "ap" is not in catalog.regions: add it there',
    ]);
  });

  it("skips values unknown during preview", () => {
    expect(catalogOutputProblems(UNKNOWN)).toEqual([]);
    expect(catalogOutputProblems({ ...valid, catalog: UNKNOWN, datacenters: [UNKNOWN] })).toEqual([]);
  });
});
