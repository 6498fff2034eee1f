import type * as pulumi from "@pulumi/pulumi";
import { GciError } from "../../common/errors";

/** The string the engine sends for values not known until apply (during preview). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** True when an input (or anything inside it) is not known yet; such values are not checked. */
export function isUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (Array.isArray(value)) return value.some(isUnknown);
  if (value && typeof value === "object") return Object.values(value).some(isUnknown);
  return false;
}

/**
 * Collects every check failure of one `check` call, so the user sees all of them at once.
 * `field(property, fn)` runs one validator: a GciError it throws becomes a failure naming
 * the property; an unknown value is skipped.
 */
export class Failures {
  readonly list: pulumi.dynamic.CheckFailure[] = [];

  field<T>(property: string, value: unknown, validate: (v: unknown) => T): T | undefined {
    if (isUnknown(value)) return undefined;
    try {
      return validate(value);
    } catch (e) {
      if (!GciError.isInstance(e)) throw e;
      this.list.push({ property, reason: e.message });
      return undefined;
    }
  }

  add(property: string, reason: string): void {
    this.list.push({ property, reason });
  }
}
