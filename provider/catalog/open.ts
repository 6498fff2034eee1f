/** Opens the catalog a URL names, so every command and daemon takes one `--catalog` string. */

import * as path from "path";

import { invalid } from "../common/errors";
import { EtcdCatalog, ETCD_DEFAULT_PREFIX } from "./etcd";
import { SqliteCatalog } from "./sqlite";
import type { Catalog } from "./types";
import type { BadRecordReporter } from "./validate";

/** Options of {@link openCatalog}, for either engine. */
export interface OpenCatalogOptions {
  /** Told about each record a list leaves out because it is not valid. @default a line on stderr */
  readonly onBadRecord?: BadRecordReporter;
}

const FORMS =
  'accepted forms are "sqlite:/abs/path/catalog.db" and "etcd://host:port,host:port,..." ' +
  `(optionally followed by a key prefix, e.g. "etcd://10.0.0.1:2379,10.0.0.2:2379${ETCD_DEFAULT_PREFIX}")`;

/**
 * Opens a catalog from a URL: `sqlite:/abs/path/catalog.db` (also `sqlite:///abs/path`) or
 * `etcd://host:port,host:port,...[/key/prefix/]` (prefix defaults to "/gci/v1/").
 */
export async function openCatalog(url: string, options: OpenCatalogOptions = {}): Promise<Catalog> {
  if (typeof url !== "string") throw invalid(`catalog URL ${String(url)} is not a string: ${FORMS}.`);
  if (url.startsWith("sqlite:")) {
    let file = url.slice("sqlite:".length);
    if (file.startsWith("///")) file = file.slice(2);
    if (!file.startsWith("/") || file.startsWith("//") || !path.isAbsolute(file)) {
      throw invalid(`catalog URL "${url}" does not name an absolute file path: ${FORMS}.`);
    }
    return new SqliteCatalog({ path: path.normalize(file), onBadRecord: options.onBadRecord });
  }
  if (url.startsWith("etcd://")) {
    const rest = url.slice("etcd://".length);
    const slash = rest.indexOf("/");
    const hosts = slash < 0 ? rest : rest.slice(0, slash);
    let prefix = slash < 0 ? ETCD_DEFAULT_PREFIX : rest.slice(slash);
    if (prefix === "/") prefix = ETCD_DEFAULT_PREFIX;
    else if (!prefix.endsWith("/")) prefix += "/";
    const endpoints = hosts.split(",").filter((h) => h.length > 0);
    if (endpoints.length === 0) {
      throw invalid(`catalog URL "${url}" lists no etcd endpoint: ${FORMS}.`);
    }
    for (const e of endpoints) {
      if (!/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$/.test(e)) {
        throw invalid(`catalog URL "${url}" has endpoint "${e}", which is not host:port: ${FORMS}.`);
      }
    }
    return new EtcdCatalog({ endpoints, prefix, onBadRecord: options.onBadRecord });
  }
  throw invalid(`catalog URL "${url}" is not understood: ${FORMS}.`);
}
