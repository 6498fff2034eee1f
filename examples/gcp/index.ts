/**
 * GCI on GCP: the same image and VM-group declarations as a GCI world, on Compute Engine.
 *
 * The image lives in its home region's storage location (us-central1). The catalog says
 * which regions GCI may use, their zones and where each stores images; europe-west1 lacks
 * the image, so its group declares a copy there (shown by `pulumi preview` before anything
 * is copied) and boots from the copy.
 */
import * as pulumi from "@pulumi/pulumi";
import { type CloudCatalog, cloudCatalogFromStackOutput } from "../../sdk/cloud";
import * as gciGcp from "../../sdk/gcp";

const config = new pulumi.Config();
const home = "us-central1";

/** The catalog this example uses when no platform stack is named. */
const localCatalog: CloudCatalog = {
  gcp: {
    // Unset: the gcp provider's project (`pulumi config set gcp:project my-project`).
    project: config.get("project"),
    regions: {
      [home]: { zones: [`${home}-a`, `${home}-b`] },
      "europe-west1": { zones: ["europe-west1-b"] },
    },
  },
};

export default async () => {
  // `pulumi config set platformStack org/gci-platform/prod` reads the catalog a platform
  // stack exports (its `catalog` output, `clouds` part) instead of the one above.
  const platform = config.get("platformStack");
  const catalog = platform
    ? cloudCatalogFromStackOutput(await new pulumi.StackReference(platform).requireOutputValue("catalog"))
    : localCatalog;

  // The image: made from Debian 12's public image family, stored in us-central1.
  const web = new gciGcp.Image("web", {
    catalog,
    region: home,
    source: {
      sourceImage: config.get("sourceImage") ?? "projects/debian-cloud/global/images/family/debian-12",
    },
    tags: { project: "gci-example" },
  });

  // The same declarations for every region; only the placement differs.
  const group = (region: string) => ({
    catalog,
    image: web,
    region,
    count: 1,
    machineSize: "nano" as const,
    ports: [80],
    allowedCidrs: [config.get("allowedCidr") ?? "0.0.0.0/0"],
    tags: { project: "gci-example" },
    startupScript: [
      "#!/bin/sh",
      "mkdir -p /srv/www && cd /srv/www",
      `echo "hello from GCI in ${region}" > index.html`,
      // A transient systemd unit, so the server outlives the boot script.
      "systemd-run --unit=gci-web --working-directory=/srv/www /usr/bin/python3 -m http.server 80",
    ].join("\n"),
  });
  const us = new gciGcp.VirtualMachineGroup("web-us", group(home));
  const eu = new gciGcp.VirtualMachineGroup("web-eu", { ...group("europe-west1"), copyTimeout: "30m" });

  return {
    imageId: web.imageId,
    urls: pulumi.all([us.urls, eu.urls]).apply((lists) => lists.flat()),
    vmIds: { [home]: us.vmIds, "europe-west1": eu.vmIds },
    // The image copy the europe-west1 group made (null for us-central1, the home region).
    transfers: { [home]: us.transfer, "europe-west1": eu.transfer },
  };
};
