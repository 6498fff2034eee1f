/** The SQLite catalog's schema: its tables, its version, and the migration that brings a file up to it. */

import type Database from "better-sqlite3";

import { precondition } from "../common/errors";

/** The schema this code writes; stored in the file's user_version pragma. */
export const SQLITE_SCHEMA_VERSION = 2;

const SCHEMA_V1 = `
CREATE TABLE IF NOT EXISTS regions (
  name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datacenters (
  name TEXT PRIMARY KEY,
  region TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  vcpus INTEGER NOT NULL,
  memory_mib INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS datacenters_region ON datacenters (region, name);
CREATE TABLE IF NOT EXISTS images (
  digest TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  owner TEXT NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS placements (
  digest TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  state TEXT NOT NULL,
  bytes_done INTEGER NOT NULL,
  bytes_total INTEGER NOT NULL,
  error TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (digest, datacenter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
  digest TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  holder TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (digest, datacenter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vm_groups (
  request_id TEXT PRIMARY KEY,
  datacenter TEXT NOT NULL,
  digest TEXT NOT NULL,
  count INTEGER NOT NULL,
  vcpus INTEGER NOT NULL,
  memory_mib INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vm_groups_datacenter ON vm_groups (datacenter, request_id);
CREATE TABLE IF NOT EXISTS vms (
  id TEXT PRIMARY KEY,
  request_id TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  digest TEXT NOT NULL,
  state TEXT NOT NULL,
  addresses TEXT NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vms_datacenter ON vms (datacenter, id);
CREATE INDEX IF NOT EXISTS vms_request ON vms (request_id, id);
`;

/** Version 2: claims on image copies (who needs a copy, so it is not deleted under them). */
const SCHEMA_V2 = `
CREATE TABLE IF NOT EXISTS image_refs (
  digest TEXT NOT NULL,
  datacenter TEXT NOT NULL,
  holder TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (digest, datacenter, holder)
) WITHOUT ROWID;
`;

/**
 * Brings the file at `file` (open as `db`) up to SQLITE_SCHEMA_VERSION in one IMMEDIATE
 * transaction, so two processes opening a new file cannot both create it; refuses a newer file.
 */
export function migrate(db: Database.Database, file: string): void {
  db.transaction(() => {
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version > SQLITE_SCHEMA_VERSION) {
      throw precondition(
        `SQLite catalog "${file}" has schema version ${version}, newer than this GCI understands ` +
          `(${SQLITE_SCHEMA_VERSION}): upgrade GCI, or point it at another catalog file.`,
      );
    }
    if (version < 1) db.exec(SCHEMA_V1);
    if (version < 2) db.exec(SCHEMA_V2);
    if (version < SQLITE_SCHEMA_VERSION) db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
  }).immediate();
}
