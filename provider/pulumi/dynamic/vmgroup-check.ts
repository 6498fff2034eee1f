/**
 * The VirtualMachineGroup's check: every input validated on its own, then against the live
 * world (the image, its ports, a group to adopt), and the replacement generation and planned
 * transfer recorded in the inputs.
 */
import { checkDigest, checkName } from "../../catalog/validate";
import { DIGEST_PATTERN } from "../../common/digest";
import { GciError, invalid, notFound } from "../../common/errors";
import { machineSize } from "../../common/sizes";
import { WorldConnection, withWorld } from "./connect";
import { Failures, isUnknown } from "./inputs";
import { nextGeneration } from "./keys";
import { announcePlan, planGroup } from "./plan";
import { CatalogOutput, checkTopology, findDatacenter, knownDatacenters } from "./topology";
import { replaceReasons } from "./vmgroup-diff";
import { adoptionProblems, imagePorts } from "./vmgroup-ops";
import { MAX_COUNT, VmGroupInputs, label } from "./vmgroup-types";

/** The engine's check: every failure at once, and the inputs with generation and plan. */
export async function checkVmGroup(olds: Partial<VmGroupInputs>, news: VmGroupInputs) {
  const f = new Failures();
  const topology = checkTopology(f, news.catalog);
  checkValues(f, news);
  if (topology) checkPlace(f, news, topology);
  // The live world is asked about the image even when other inputs failed, so every
  // problem shows at once; planning waits until everything else is valid.
  const digestOk = typeof news.image === "string" && DIGEST_PATTERN.test(news.image);
  if (!topology || !digestOk || isUnknown(news.imageHint) || isUnknown(news.ports) || isUnknown(news.adopt)) {
    return { inputs: news, failures: f.list };
  }
  let inputs: VmGroupInputs = news;
  try {
    inputs = await withWorld(topology, (world) => checkInWorld(f, world, olds, news, topology));
  } catch (e) {
    if (!GciError.isInstance(e)) throw e;
    f.add("catalog", `the world could not be asked (${e.message}): is it running? \`gci world status\``);
  }
  return { inputs, failures: f.list };
}

/** The inputs that stand on their own: image, count, size, timeout, key, adopt and ports. */
function checkValues(f: Failures, news: VmGroupInputs): void {
  f.field("image", news.image, (v) => checkDigest(v));
  f.field("count", news.count, (v) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > MAX_COUNT) {
      throw invalid(`count ${JSON.stringify(v)} is out of range: ask for 1 to ${MAX_COUNT} VMs`);
    }
  });
  f.field("machineSize", news.machineSize, (v) => machineSize(String(v)));
  f.field("timeoutSeconds", news.timeoutSeconds, (v) => {
    if (typeof v !== "number" || !(v >= 10 && v <= 86400)) {
      throw invalid(`timeoutSeconds ${JSON.stringify(v)} must be from 10 to 86400`);
    }
  });
  if (typeof news.requestKey !== "string" || news.requestKey === "") {
    f.add(
      "requestKey",
      "is missing: create VirtualMachineGroup through the gci SDK (new gci.VirtualMachineGroup)",
    );
  }
  if (news.region === undefined && news.datacenter === undefined) {
    f.add("region", 'say where the VMs run: set region (e.g. "eu") or datacenter (e.g. "eu-1")');
  }
  f.field("adopt", news.adopt, (v) => {
    if (v !== undefined && (typeof v !== "string" || v.length === 0 || v.length > 512)) {
      throw invalid(
        `adopt ${JSON.stringify(v)} must be the request id of an existing VM group (\`gci vm ls\`)`,
      );
    }
  });
  f.field("ports", news.ports, (v) => {
    if (v === undefined) return;
    if (!Array.isArray(v) || v.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
      throw invalid(`ports ${JSON.stringify(v)} must be a list of port numbers from 1 to 65535`);
    }
  });
}

/** region and datacenter: in the catalog, and (both set) one in the other. */
function checkPlace(f: Failures, news: VmGroupInputs, topology: CatalogOutput): void {
  f.field("region", news.region, (v) => {
    if (v === undefined) return;
    checkName("region", v);
    if (!topology.regions.includes(v as string)) {
      throw notFound(`region "${v}" is not in the catalog (regions: ${topology.regions.join(", ")})`);
    }
  });
  f.field("datacenter", news.datacenter, (v) => {
    if (v === undefined) return;
    const dc = findDatacenter(topology, String(v));
    if (!dc) throw notFound(`datacenter "${v}" is not in the catalog (known: ${knownDatacenters(topology)})`);
    if (typeof news.region === "string" && dc.region !== news.region) {
      throw invalid(
        `datacenter "${v}" is in region "${dc.region}", not "${news.region}": set one or the other`,
      );
    }
  });
}

/**
 * The checks that ask the live world (the image, its ports, a group to adopt); when all pass,
 * the inputs with their generation and, for a group that needs new VMs, the planned transfer.
 */
async function checkInWorld(
  f: Failures,
  world: WorldConnection,
  olds: Partial<VmGroupInputs>,
  news: VmGroupInputs,
  topology: CatalogOutput,
): Promise<VmGroupInputs> {
  // Olds without an image: nothing exists yet (olds of an import are the group as read).
  const creating = olds?.image === undefined;
  const image = await (await world.catalog()).getImage(news.image);
  if (!image && !news.imageHint) {
    f.add(
      "image",
      `image ${news.image} is not in the catalog: upload it first (gci.Image in this program, or \`gci image push\`)`,
    );
    return news;
  }
  const ports = await imagePorts(world, news.image, news.imageHint);
  const missing = (news.ports ?? []).filter((p) => ports !== undefined && !ports.includes(p));
  if (missing.length > 0) {
    f.add("ports", `image ${news.image} declares ports [${ports}], not ${missing.join(", ")}`);
  }
  if (creating && news.adopt !== undefined && typeof news.adopt === "string") {
    const group = await (await world.catalog()).getVmGroup(news.adopt);
    const problems = group
      ? adoptionProblems(group, news, world)
      : [`no VM group ${news.adopt} is in the catalog`];
    for (const reason of problems)
      f.add("adopt", `${reason}: fix the program or adopt another group (\`gci vm ls\`)`);
  }
  if (f.list.length > 0 || isUnknown(news)) return news;
  const replaces = creating
    ? []
    : replaceReasons(olds, news, false, (dc) => findDatacenter(topology, dc)?.region);
  const inputs = {
    ...news,
    generation: nextGeneration(creating ? undefined : olds, replaces),
    plannedTransfer: null,
  };
  if ((creating && news.adopt === undefined) || replaces.length > 0) {
    const plan = await planGroup(world, { ...news, digest: news.image }, news.imageHint);
    if (plan.transfer) announcePlan(label(news.requestKey), plan.transfer);
    return { ...inputs, plannedTransfer: plan.transfer };
  }
  return inputs;
}
