import * as path from "path";
import type * as pulumi from "@pulumi/pulumi";
import { packageRoot } from "../provider/common/paths";

/**
 * The provider object of one resource kind. The engine serializes it into the state as a
 * closure, so it captures only two strings: the compiled handlers' path and the kind. The
 * handlers (and every client they open) are loaded inside each call, in the provider process.
 * @internal
 */
export function providerFor(kind: string): pulumi.dynamic.ResourceProvider {
  const handlersPath = path.join(packageRoot(), "dist", "provider", "pulumi", "dynamic", "handlers.js");
  const load = (): Required<pulumi.dynamic.ResourceProvider> => require(handlersPath).handlers[kind];
  return {
    check: (olds, news) => load().check(olds, news),
    diff: (id, olds, news) => load().diff(id, olds, news),
    create: (inputs) => load().create(inputs),
    read: (id, props) => load().read(id, props),
    update: (id, olds, news) => load().update(id, olds, news),
    delete: (id, props) => load().delete(id, props),
  };
}
