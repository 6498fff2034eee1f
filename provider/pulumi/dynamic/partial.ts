/**
 * A create or update that half-succeeded. The dynamic-provider host (@pulumi/pulumi's
 * cmd/dynamic-provider) turns an error carrying `id` into the engine's
 * ErrorResourceInitFailed, so the engine records the resource with these properties and
 * reports the reasons; the next `pulumi up` then updates it (resources with init errors are
 * always updated), which finishes the job.
 */
export class PartialSuccess extends Error {
  constructor(
    message: string,
    readonly id: string,
    readonly properties: Record<string, unknown>,
    readonly reasons: string[] = [message],
  ) {
    super(message);
    this.name = "PartialSuccess";
  }
}
