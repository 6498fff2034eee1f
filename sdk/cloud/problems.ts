import { GciError } from "../../provider/common/errors";

/** One invalid input: where it is (a property path) and why, naming the bad value and the fix. */
export interface Problem {
  readonly property: string;
  readonly reason: string;
}

/**
 * The arguments of a cloud component (or a cloud catalog) are invalid. Carries every problem,
 * not the first; its code is INVALID_ARGUMENT like every GCI input error.
 */
export class CloudArgsError extends GciError {
  readonly problems: readonly Problem[];

  constructor(what: string, problems: readonly Problem[]) {
    const n = problems.length;
    super(
      "INVALID_ARGUMENT",
      `${what}: ${n} problem${n === 1 ? "" : "s"}\n` +
        problems.map((p) => `  - ${p.property}: ${p.reason}`).join("\n"),
    );
    this.name = "CloudArgsError";
    this.problems = problems;
  }
}

/** Throws a CloudArgsError listing `problems`, if there are any. */
export function throwIfProblems(what: string, problems: readonly Problem[]): void {
  if (problems.length > 0) throw new CloudArgsError(what, problems);
}

/** A value as it appears in a message: quoted strings, "missing" for undefined. */
export function show(value: unknown): string {
  if (value === undefined) return "missing";
  if (typeof value === "function") return "a function";
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** A list of names for a message: `"a", "b"`, or `(none)`. */
export function names(list: Iterable<string>): string {
  const all = [...list].map((n) => JSON.stringify(n));
  return all.length === 0 ? "(none)" : all.join(", ");
}

/** True for a plain object (not an array, not null). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
