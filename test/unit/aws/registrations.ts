/**
 * Records every resource a program registers, through Pulumi's mocks. No cloud is reachable
 * from these tests, so this is the one place in GCI where mocks are right (the core
 * resources are tested through the real engine). Used by the AWS and GCP component tests.
 */

import * as pulumi from "@pulumi/pulumi";

/** One registered resource: what the engine would receive for it. */
export interface Registration {
  readonly type: string;
  readonly name: string;
  // Inputs are whatever the component passed; tests read them field by field.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly inputs: Record<string, any>;
  readonly custom: boolean;
  /** The provider reference ("<urn>::<id>"), empty for the default provider. */
  readonly provider: string;
  readonly id: string;
  parent: string;
  urn: string;
  retainOnDelete?: boolean;
  customTimeouts?: { create: string; update: string; delete: string };
}

/** The id and extra output state a fake cloud gives a resource. */
export type FakeCloud = (args: pulumi.runtime.MockResourceArgs) => {
  id?: string;
  state?: Record<string, unknown>;
};

/** What a fake cloud answers to an invoke (a data source such as aws.ec2.getAmi). */
export type FakeInvoke = (args: pulumi.runtime.MockCallArgs) => Record<string, unknown>;

/** The part of a RegisterResourceRequest read here (the mocks' newResource sees no options). */
interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getRetainondelete(): boolean | undefined;
  getCustomtimeouts(): { getCreate(): string; getUpdate(): string; getDelete(): string } | undefined;
}
interface RegisterResponse {
  getUrn(): string;
}
type Callback = (err: unknown, resp?: RegisterResponse) => void;
interface Monitor {
  registerResource(req: RegisterRequest, callback: Callback): void;
}

/**
 * Installs the mocks (call once per test file, in beforeAll) and returns the list every
 * registration is appended to. Options the mocks' `newResource` does not see (parent,
 * retainOnDelete, customTimeouts) are read from the request the SDK sends the monitor.
 */
export async function recordRegistrations(
  fake: FakeCloud,
  invoke: FakeInvoke = (args) => args.inputs,
): Promise<Registration[]> {
  const list: Registration[] = [];
  const options = new Map<string, Partial<Registration>>();
  const key = (type: string, name: string): string => `${type}::${name}`;
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const { id = `${args.name}-id`, state = {} } = fake(args);
        list.push({
          type: args.type,
          name: args.name,
          inputs: args.inputs,
          custom: args.custom ?? true,
          provider: args.provider ?? "",
          id,
          parent: "",
          urn: "",
          ...options.get(key(args.type, args.name)),
        });
        return { id, state: { ...args.inputs, ...state } };
      },
      call: invoke,
    },
    "gci-cloud-test",
    "test",
  );
  const monitor = pulumi.runtime.getMonitor() as unknown as Monitor;
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, callback) => {
    const k = key(req.getType(), req.getName());
    const t = req.getCustomtimeouts();
    options.set(k, {
      parent: req.getParent(),
      retainOnDelete: req.getRetainondelete(),
      customTimeouts: t ? { create: t.getCreate(), update: t.getUpdate(), delete: t.getDelete() } : undefined,
    });
    register(req, (err, resp) => {
      const r = list.find((x) => key(x.type, x.name) === k);
      if (r && resp) r.urn = resp.getUrn();
      callback(err, resp);
    });
  };
  return list;
}

/** The value of an output, once the mocks have resolved it. */
export function valueOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((v) => resolve(v)));
}

/** The provider reference a child of provider registration `p` carries. */
export function providerRef(p: Registration): string {
  return `${p.urn}::${p.id}`;
}
