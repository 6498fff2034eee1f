/**
 * Issue 10, item 7.6: two stacks declare an Image of the same content (so the same digest, the
 * same stored copies). Destroying one stack's Image deletes a copy only when nothing else
 * references it: not the home copy the other stack's Image claims, not the copy its VM group
 * runs from. The real dynamic-provider handlers drive real cluster managers.
 */

import { randomUUID } from "crypto";
import { waitForOperation } from "../../provider/common/client";
import { imageHandlers, ImageInputs, ImageOutputs } from "../../provider/pulumi/dynamic/image";
import { CATALOG_OUTPUT_SCHEMA, CatalogOutput } from "../../provider/pulumi/dynamic/topology";
import { makeImage, testWorld, TestWorld } from "../support/world";
import { startGroup } from "./crash-support";

describe("race: two stacks share one image's copies", () => {
  let world: TestWorld;

  beforeAll(async () => {
    world = await testWorld({ regions: { r: ["r-1", "r-2"] } });
  }, 60_000);

  afterAll(async () => {
    await world?.stop();
  });

  /** The catalog stack output of the test world, as the platform stack exports it. */
  const topology = (): CatalogOutput => ({
    schema: CATALOG_OUTPUT_SCHEMA,
    catalog: world.state.catalog,
    regions: ["r"],
    datacenters: world.state.datacenters.map((d) => ({
      name: d.name,
      region: d.region,
      endpoint: d.endpoint,
    })),
  });

  /** Datacenters whose placement of `digest` is present. */
  const holders = async (digest: string): Promise<string[]> => {
    const catalog = await world.catalog();
    try {
      return (await catalog.listPlacements(digest))
        .filter((p) => p.state === "present")
        .map((p) => p.datacenter)
        .sort();
    } finally {
      await catalog.close();
    }
  };

  it("one stack's destroy leaves the copies the other stack's Image and VM group use", async () => {
    const image = await makeImage(world.dir, { name: "shared", sizeMiB: 1 });
    const inputs = (stack: string): ImageInputs => ({
      catalog: topology(),
      datacenter: "r-1",
      file: image.file,
      digest: image.digest,
      sizeBytes: image.sizeBytes,
      name: "shared",
      driver: "process",
      ports: [80],
      timeoutSeconds: 60,
      requestKey: `${stack}::app::gci:Image::web`,
      generation: 0,
    });
    const a = await imageHandlers.create!(inputs("stack-a"));
    const b = await imageHandlers.create!(inputs("stack-b"));
    // Stack b's VM group runs in r-2, from the copy its start pulled there.
    const group = randomUUID();
    await startGroup(world, "r-2", image.digest, 1, group);
    expect(await holders(image.digest)).toEqual(["r-1", "r-2"]);

    await imageHandlers.delete!(a.id, a.outs as ImageOutputs);
    expect(await holders(image.digest)).toEqual(["r-1", "r-2"]);

    // Once stack b is gone too, nothing references either copy: both go.
    const client = world.client("r-2");
    await waitForOperation(client, await client.stopVms(randomUUID(), group), { timeoutMs: 60_000 });
    await imageHandlers.delete!(b.id, b.outs as ImageOutputs);
    expect(await holders(image.digest)).toEqual([]);
  }, 120_000);
});
