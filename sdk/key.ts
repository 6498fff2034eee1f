import * as pulumi from "@pulumi/pulumi";

/**
 * The stable key of a resource: project, stack, type, parent and name — what its URN is
 * made of. The handlers derive idempotency keys from it (provider/pulumi/dynamic/keys.ts), since a
 * dynamic provider's create is not told the URN. Known during preview.
 * @internal
 */
export function requestKey(
  type: string,
  name: string,
  opts?: pulumi.CustomResourceOptions,
): pulumi.Input<string> {
  const base = `${pulumi.getProject()}/${pulumi.getStack()}/gci:${type}`;
  return opts?.parent ? opts.parent.urn.apply((parent) => `${base}/${parent}/${name}`) : `${base}//${name}`;
}
