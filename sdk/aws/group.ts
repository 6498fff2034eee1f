import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { CloudTransfer } from "../cloud/group";
import { type VirtualMachineGroupArgs, planVirtualMachineGroup } from "./plan";

/**
 * N VMs from a GCI image in an AWS region, decided from the catalog. When the catalog does
 * not list the image's AMI in that region, the group declares an `aws.ec2.AmiCopy` there
 * (so `pulumi preview` shows the copy before it happens) and runs its instances from the
 * copy; when it does, no copy is declared. Every resource uses a provider for the region.
 */
export class VirtualMachineGroup extends pulumi.ComponentResource {
  /** The AWS region the VMs run in. */
  readonly region: pulumi.Output<string>;
  /** The availability zone: the one the group was placed on, else the first VM's. */
  readonly datacenter: pulumi.Output<string>;
  /** The EC2 instance ids, one per VM. */
  readonly vmIds: pulumi.Output<string[]>;
  /** host:port for every VM and port (public IP when there is one), VM by VM. */
  readonly addresses: pulumi.Output<string[]>;
  /** The AMI the VMs run: the copy when one was made. */
  readonly amiId: pulumi.Output<string>;
  /** http://host:port of each VM's first port (none without ports), as the core group reports. */
  readonly urls: pulumi.Output<string[]>;
  /** The AMI copy this group made into its region, or null when the AMI was there. */
  readonly transfer: pulumi.Output<CloudTransfer | null>;

  constructor(name: string, args: VirtualMachineGroupArgs, opts?: pulumi.ComponentResourceOptions) {
    // Validated before anything is registered, so bad arguments leave nothing behind.
    const plan = planVirtualMachineGroup(args, name);
    super("gci:aws:VirtualMachineGroup", name, {}, opts);

    const provider =
      args.provider ?? new aws.Provider(`${name}-${plan.region}`, { region: plan.region }, { parent: this });
    const child = { parent: this, provider };
    const tags = { ...(args.tags ?? {}), "gci:group": name, "gci:image": plan.image };

    let amiId: pulumi.Input<string>;
    let transfer: pulumi.Output<CloudTransfer | null> = pulumi.output(null);
    if (plan.ami.kind === "copy") {
      const { sourceRegion, sourceAmiId } = plan.ami;
      const copy = new aws.ec2.AmiCopy(
        `${name}-copy-${plan.region}`,
        {
          sourceAmiId,
          sourceAmiRegion: sourceRegion,
          description: `GCI image ${plan.image} copied from ${sourceRegion} for group ${name}`,
          encrypted: plan.encrypted,
          kmsKeyId: plan.encrypted ? plan.kmsKeyId : undefined,
          tags: {
            ...(plan.copyTags ? (args.image.tags ?? {}) : {}),
            ...tags,
            "gci:source-region": sourceRegion,
            "gci:source-ami": sourceAmiId,
          },
        },
        // The engine bounds the copy's wait with customTimeouts (unlike dynamic providers,
        // a bridged provider applies them); the failure then names this resource.
        { ...child, retainOnDelete: plan.retainCopy, customTimeouts: { create: plan.copyTimeout } },
      );
      amiId = copy.id;
      transfer = pulumi.all([sourceAmiId, copy.id]).apply(([sourceImageId, imageId]) => ({
        image: plan.image,
        source: sourceRegion,
        destination: plan.region,
        sourceImageId,
        imageId,
      }));
    } else {
      amiId = plan.ami.amiId;
    }

    let securityGroupIds: pulumi.Input<string>[] | undefined;
    if (plan.ports.length > 0) {
      const sg = new aws.ec2.SecurityGroup(
        name,
        {
          description: `GCI group ${name}: tcp ${plan.ports.join(", ")}`,
          ingress: plan.ports.map((port) => ({
            protocol: "tcp",
            fromPort: port,
            toPort: port,
            cidrBlocks: [...plan.allowedCidrs],
          })),
          // The provider drops AWS's default allow-all egress from a group it manages, so say it.
          egress: [{ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] }],
          tags,
        },
        child,
      );
      securityGroupIds = [sg.id];
    }

    const instances: aws.ec2.Instance[] = [];
    for (let i = 0; i < plan.count; i++) {
      instances.push(
        new aws.ec2.Instance(
          `${name}-${i}`,
          {
            ami: amiId,
            instanceType: plan.instanceType,
            availabilityZone: plan.availabilityZone,
            vpcSecurityGroupIds: securityGroupIds,
            userData: args.startupScript,
            rootBlockDevice: plan.encrypted ? { encrypted: true, kmsKeyId: plan.kmsKeyId } : undefined,
            tags: { ...tags, Name: `${name}-${i}` },
          },
          child,
        ),
      );
    }

    this.region = pulumi.output(plan.region);
    this.datacenter = plan.availabilityZone
      ? pulumi.output(plan.availabilityZone)
      : instances[0].availabilityZone;
    this.vmIds = pulumi.all(instances.map((vm) => vm.id));
    const hosts = pulumi.all(
      instances.map((vm) => pulumi.all([vm.publicIp, vm.privateIp]).apply(([a, b]) => a || b)),
    );
    this.addresses = hosts.apply((hs) => hs.flatMap((host) => plan.ports.map((port) => `${host}:${port}`)));
    this.urls = hosts.apply((hs) =>
      hs.flatMap((host) => plan.ports.slice(0, 1).map((port) => `http://${host}:${port}`)),
    );
    this.amiId = pulumi.output(amiId);
    this.transfer = transfer;
    this.registerOutputs({
      region: this.region,
      datacenter: this.datacenter,
      vmIds: this.vmIds,
      addresses: this.addresses,
      urls: this.urls,
      amiId: this.amiId,
      transfer: this.transfer,
    });
  }
}
