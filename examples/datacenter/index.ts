import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import * as gci from "../../sdk";

// The catalog file defaults to the state folder, so the example leaves nothing in the repo.
const config = new pulumi.Config();
const catalog =
  config.get("catalog") ??
  `sqlite:${path.join(process.env.GCI_STATE ?? path.join(__dirname, "../../.gci"), "catalog.db")}`;

const eu = new gci.Datacenter("eu-1", { catalog, region: "eu", endpoint: "127.0.0.1:7001", vcpus: 4 });

export const datacenter = eu.name;
export const region = eu.region;
export const endpoint = eu.endpoint;
