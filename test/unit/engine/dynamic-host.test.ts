import * as path from "path";
import { REPO } from "../../support/engine";

// The built host, as the engine runs it (its serialized provider names files under dist/).
const host = require(path.join(REPO, "dist", "provider", "pulumi", "engine", "dynamic-host.js")) as {
  gciKind(type: string): string | undefined;
  typeOfUrn(urn: string): string;
  serializedProvider(kind: string): string;
};

describe("the dynamic-provider host's import support", () => {
  it("knows GCI's types and no others", () => {
    expect(host.gciKind("pulumi-nodejs:dynamic/gci:VirtualMachineGroup")).toBe("VirtualMachineGroup");
    expect(host.gciKind("pulumi-nodejs:dynamic/gci:Image")).toBe("Image");
    expect(host.gciKind("pulumi-nodejs:dynamic/gci:Nope")).toBeUndefined();
    expect(host.gciKind("pulumi-nodejs:dynamic:Resource")).toBeUndefined();
    expect(host.gciKind("pulumi-nodejs:dynamic/other:VirtualMachineGroup")).toBeUndefined();
  });

  it("finds the type in a URN, also under a parent", () => {
    const t = "pulumi-nodejs:dynamic/gci:VirtualMachineGroup";
    expect(host.typeOfUrn(`urn:pulumi:dev::app::${t}::web`)).toBe(t);
    expect(host.typeOfUrn(`urn:pulumi:dev::app::my:index:Component$${t}::web`)).toBe(t);
    expect(host.typeOfUrn("not-a-urn")).toBe("");
  });

  it("serializes a provider the stock host can load: GCI's provider of that kind", () => {
    const requireFromString = require("require-from-string") as (code: string) => {
      handler(): Record<string, unknown>;
    };
    const provider = requireFromString(host.serializedProvider("VirtualMachineGroup")).handler();
    expect(Object.keys(provider).sort()).toEqual(["check", "create", "delete", "diff", "read", "update"]);
  });
});
