/**
 * GCI on AWS: the same image and VM-group declarations as a GCI world, on EC2.
 *
 * The image is an AMI in its home region (us-east-1). The catalog says which regions GCI may
 * use and where the AMI already is; eu-west-1 lacks it, so its group declares an AMI copy
 * there (shown by `pulumi preview` before anything is copied) and boots from the copy.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as gciAws from "../../sdk/aws";
import { type CloudCatalog, cloudCatalogFromStackOutput } from "../../sdk/cloud";

const config = new pulumi.Config();
const home = "us-east-1";

/** The catalog this example uses when no platform stack is named. */
const localCatalog: CloudCatalog = {
  aws: {
    regions: {
      [home]: { availabilityZones: [`${home}a`, `${home}b`] },
      "eu-west-1": {},
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

  // The image: an existing AMI, by default the newest Amazon Linux 2023 of the home region.
  const amiId =
    config.get("amiId") ??
    aws.ec2
      .getAmiOutput({
        region: home,
        owners: ["amazon"],
        mostRecent: true,
        filters: [
          { name: "name", values: ["al2023-ami-2023.*-x86_64"] },
          { name: "state", values: ["available"] },
        ],
      })
      .apply((ami) => ami.id);
  const web = new gciAws.Image("web", {
    catalog,
    region: home,
    source: { amiId },
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
  const us = new gciAws.VirtualMachineGroup("web-us", group(home));
  const eu = new gciAws.VirtualMachineGroup("web-eu", { ...group("eu-west-1"), copyTimeout: "45m" });

  return {
    amiId: web.amiId,
    urls: pulumi.all([us.urls, eu.urls]).apply((lists) => lists.flat()),
    vmIds: { [home]: us.vmIds, "eu-west-1": eu.vmIds },
    // The AMI copy the eu-west-1 group made (null for us-east-1, the home region).
    transfers: { [home]: us.transfer, "eu-west-1": eu.transfer },
  };
};
