/**
 * The image manifest (`manifest.json`, the first entry of every image archive): its type, a
 * validator that reports every problem at once, and a canonical serialization so that packing
 * the same directory with the same manifest always yields the same bytes.
 */

import { invalid } from "../common/errors";
import { show } from "../common/digest";
import { checkImagePath } from "./paths";

/** The only schema this version reads and writes. */
export const MANIFEST_SCHEMA = "gci.image/v1";
/** Name of the manifest entry; it must be the archive's first entry. */
export const MANIFEST_NAME = "manifest.json";
/** Largest manifest accepted, so a hostile archive cannot make the reader buffer much. */
export const MAX_MANIFEST_BYTES = 64 * 1024;

const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]*$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_TEXT = 4096;

/**
 * Variables that change what a program loads or runs before its own code does: the dynamic
 * loader's (LD_*), glibc's other "unsecure" ones (those it drops for setuid programs), and the
 * shells' start-up hooks. An image's environment reaches only its own entrypoint, inside the
 * sandbox, but a manifest naming one of these is a sign of an attack on whatever runs it, so it
 * is refused outright rather than filtered.
 */
const FORBIDDEN_ENV_PREFIXES = ["LD_", "GCI_", "MALLOC_"];
const FORBIDDEN_ENV = new Set([
  "BASH_ENV",
  "ENV",
  "GCONV_PATH",
  "GETCONF_DIR",
  "GLIBC_TUNABLES",
  "HOSTALIASES",
  "IFS",
  "LOCALDOMAIN",
  "LOCPATH",
  "NIS_PATH",
  "NLSPATH",
  "PS4",
  "RESOLV_HOST_CONF",
  "RES_OPTIONS",
  "SHELLOPTS",
  "BASHOPTS",
  "TMPDIR",
  "TZDIR",
]);

/** Why an environment variable's name is refused, or undefined when it may be set. */
export function forbiddenEnv(name: string): string | undefined {
  const prefix = FORBIDDEN_ENV_PREFIXES.find((p) => name.startsWith(p));
  if (prefix === "GCI_") return `is reserved: the driver sets GCI_* variables itself; rename it`;
  if (prefix !== undefined || FORBIDDEN_ENV.has(name)) {
    return (
      `is not allowed: ${name} changes what the dynamic loader, libc or a shell loads before the ` +
      `program runs; remove it (put what it configures into the image's files instead)`
    );
  }
  return undefined;
}

/** How an image's VMs are run. */
export type Driver = "qemu" | "process";

/** Contents of `manifest.json`. Paths are relative to the image root, e.g. "boot/vmlinuz". */
export interface Manifest {
  readonly schema: typeof MANIFEST_SCHEMA;
  /** 1-128 characters: lowercase letters, digits, '.', '_', '-'; starts with a letter or digit. */
  readonly name: string;
  readonly driver: Driver;
  /** Kernel image; required for driver "qemu". */
  readonly kernel?: string;
  /** Initramfs; required for driver "qemu". */
  readonly initrd?: string;
  /** Optional disk image for driver "qemu". @default no disk */
  readonly disk?: string;
  /** Kernel command line for driver "qemu". @default the driver's default */
  readonly cmdline?: string;
  /** Program and arguments for driver "process"; the first element is a path inside the image. */
  readonly entrypoint?: readonly string[];
  /** Guest TCP ports to forward to the host. @default none */
  readonly ports?: readonly number[];
  /** Environment of the guest process or init. @default empty */
  readonly env?: Readonly<Record<string, string>>;
}

/** One reason a manifest is refused, named by the field it concerns. */
export interface ManifestProblem {
  readonly property: string;
  readonly reason: string;
}

type Checker = (value: unknown, property: string, problems: ManifestProblem[]) => void;

// Field order here is also the order of the canonical serialization.
const FIELDS: Readonly<Record<keyof Manifest, Checker>> = {
  schema: (v, p, out) => {
    if (v !== MANIFEST_SCHEMA)
      out.push({ property: p, reason: `must be "${MANIFEST_SCHEMA}", got ${show(v)}` });
  },
  name: (v, p, out) => {
    if (typeof v !== "string" || v.length < 1 || v.length > 128 || !IMAGE_NAME.test(v)) {
      out.push({
        property: p,
        reason:
          `must be 1-128 characters of a-z, 0-9, '.', '_', '-' starting with a letter or digit, ` +
          `got ${show(v)}`,
      });
    }
  },
  driver: (v, p, out) => {
    if (v !== "qemu" && v !== "process") {
      out.push({ property: p, reason: `must be "qemu" or "process", got ${show(v)}` });
    }
  },
  kernel: (v, p, out) => checkPathField(v, p, out),
  initrd: (v, p, out) => checkPathField(v, p, out),
  disk: (v, p, out) => checkPathField(v, p, out),
  cmdline: (v, p, out) => checkText(v, p, out),
  entrypoint: (v, p, out) => {
    if (!Array.isArray(v) || v.length === 0) {
      out.push({ property: p, reason: `must be a non-empty array of strings, got ${typeName(v)}` });
      return;
    }
    v.forEach((arg, i) =>
      i === 0 ? checkPathField(arg, `${p}[0]`, out) : checkText(arg, `${p}[${i}]`, out),
    );
  },
  ports: (v, p, out) => {
    if (!Array.isArray(v)) {
      out.push({ property: p, reason: `must be an array of port numbers, got ${typeName(v)}` });
      return;
    }
    const seen = new Set<unknown>();
    v.forEach((port, i) => {
      if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
        out.push({ property: `${p}[${i}]`, reason: `must be an integer from 1 to 65535, got ${show(port)}` });
      } else if (seen.has(port)) {
        out.push({ property: `${p}[${i}]`, reason: `port ${port} is listed twice; list each port once` });
      }
      seen.add(port);
    });
  },
  env: (v, p, out) => {
    if (!isPlainObject(v)) {
      out.push({ property: p, reason: `must be an object of string values, got ${typeName(v)}` });
      return;
    }
    for (const [key, value] of Object.entries(v)) {
      if (!ENV_NAME.test(key)) {
        out.push({
          property: `${p}.${key}`,
          reason: `is not a valid variable name; use [A-Za-z_][A-Za-z0-9_]*`,
        });
      } else if (forbiddenEnv(key) !== undefined) {
        out.push({ property: `${p}.${key}`, reason: forbiddenEnv(key)! });
      }
      checkText(value, `${p}.${key}`, out);
    }
  },
};

/** Every problem with a would-be manifest; empty when it is valid. */
export function checkManifest(value: unknown): ManifestProblem[] {
  if (!isPlainObject(value)) {
    return [{ property: "(manifest)", reason: `must be a JSON object, got ${typeName(value)}` }];
  }
  const problems: ManifestProblem[] = [];
  for (const key of Object.keys(value)) {
    const check = (FIELDS as Record<string, Checker | undefined>)[key];
    // Unknown fields are refused rather than ignored: a newer writer's field that this reader
    // skips could change how the image boots. New fields come with a new schema version.
    if (check === undefined) {
      problems.push({
        property: key,
        reason: `is not a field of ${MANIFEST_SCHEMA} (known: ${Object.keys(FIELDS).join(", ")}); remove it`,
      });
    } else {
      check(value[key], key, problems);
    }
  }
  for (const key of ["schema", "name", "driver"] as const) {
    if (!(key in value)) problems.push({ property: key, reason: "is required" });
  }
  const required =
    value.driver === "qemu" ? ["kernel", "initrd"] : value.driver === "process" ? ["entrypoint"] : [];
  for (const key of required) {
    if (!(key in value))
      problems.push({ property: key, reason: `is required for driver "${String(value.driver)}"` });
  }
  return problems;
}

/** Throws INVALID_ARGUMENT listing every problem, or returns the value typed as a Manifest. */
export function assertManifest(value: unknown, where: string): Manifest {
  const problems = checkManifest(value);
  if (problems.length > 0) {
    const list = problems.map((p) => `${p.property}: ${p.reason}`).join("; ");
    throw invalid(
      `${where} is not a valid ${MANIFEST_SCHEMA} manifest: ${list}. Fix these fields and pack again.`,
    );
  }
  return value as Manifest;
}

/** Parses the bytes of a `manifest.json` entry, with messages that name the entry. */
export function parseManifest(bytes: Buffer): Manifest {
  let text: string;
  let value: unknown;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalid(`entry "${MANIFEST_NAME}" is not UTF-8 text; write the manifest as UTF-8 JSON.`);
  }
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw invalid(
      `entry "${MANIFEST_NAME}" is not valid JSON (${(e as Error).message}); ` +
        `write it with JSON.stringify or packDirectory.`,
    );
  }
  return assertManifest(value, `entry "${MANIFEST_NAME}"`);
}

/** Canonical JSON of a valid manifest: fixed field order, sorted env, no whitespace. */
export function serializeManifest(manifest: Manifest): Buffer {
  const ordered: Record<string, unknown> = {};
  for (const key of Object.keys(FIELDS) as (keyof Manifest)[]) {
    const value = manifest[key];
    if (value === undefined) continue;
    ordered[key] =
      key === "env"
        ? Object.fromEntries(
            Object.entries(value as Record<string, string>).sort(([a], [b]) => (a < b ? -1 : 1)),
          )
        : value;
  }
  return Buffer.from(JSON.stringify(ordered), "utf8");
}

/** The manifest fields that name files which must be present in the image. */
export function referencedPaths(manifest: Manifest): { field: string; path: string }[] {
  const refs: { field: string; path: string }[] = [];
  for (const field of ["kernel", "initrd", "disk"] as const) {
    const path = manifest[field];
    if (path !== undefined) refs.push({ field, path });
  }
  const program = manifest.entrypoint?.[0];
  if (program !== undefined) refs.push({ field: "entrypoint[0]", path: program });
  return refs;
}

function checkPathField(value: unknown, property: string, out: ManifestProblem[]): void {
  if (typeof value !== "string") {
    out.push({ property, reason: `must be a path string, got ${typeName(value)}` });
    return;
  }
  const reason = checkImagePath(value);
  if (reason !== undefined) out.push({ property, reason: `${show(value)} ${reason}` });
}

function checkText(value: unknown, property: string, out: ManifestProblem[]): void {
  if (typeof value !== "string") {
    out.push({ property, reason: `must be a string, got ${typeName(value)}` });
  } else if (value.includes("\0") || value.length > MAX_TEXT) {
    out.push({ property, reason: `must have at most ${MAX_TEXT} characters and no NUL byte` });
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "object":
      return "an object";
    case "string":
      return `the string ${show(value)}`;
    default:
      return `the ${typeof value} ${String(value)}`;
  }
}
