import type { EngineEvent } from "@pulumi/pulumi/automation";
import type { PlannedTransfer } from "./plan";

/** The machine-readable part of a preview: what `gci stack preview --json` adds for CI pipelines. */
export interface PreviewReport {
  /** Every step the update would take (same steps left out). */
  readonly steps: {
    readonly op: string;
    readonly urn: string;
    readonly type: string;
    readonly diffs?: string[];
  }[];
  /** Every image move the update would cause, by the resource that causes it. */
  readonly plannedTransfers: (PlannedTransfer & { readonly urn: string; readonly resource: string })[];
  /** Warnings and errors the engine and the providers reported. */
  readonly diagnostics: { readonly severity: string; readonly message: string; readonly urn?: string }[];
}

/**
 * Builds the PreviewReport of a preview from its engine events (the Automation API's
 * `onEvent`). Planned transfers come from the inputs `check` returned for each step
 * (VirtualMachineGroup and ImageReplica record theirs as `plannedTransfer`).
 */
export function previewReport(events: readonly EngineEvent[]): PreviewReport {
  const steps: PreviewReport["steps"][number][] = [];
  const transfers = new Map<string, PreviewReport["plannedTransfers"][number]>();
  const diagnostics: PreviewReport["diagnostics"][number][] = [];
  for (const e of events) {
    const m = e.resourcePreEvent?.metadata;
    if (m && m.op !== "same") {
      steps.push({ op: m.op, urn: m.urn, type: m.type, ...(m.diffs?.length ? { diffs: m.diffs } : {}) });
      const planned = m.new?.inputs?.plannedTransfer as PlannedTransfer | null | undefined;
      if (planned && typeof planned === "object" && m.op !== "delete" && m.op !== "delete-replaced") {
        transfers.set(m.urn, {
          urn: m.urn,
          resource: m.urn.split("::").pop() ?? m.urn,
          digest: planned.digest,
          source: planned.source,
          destination: planned.destination,
          bytes: planned.bytes,
        });
      }
    }
    const d = e.diagnosticEvent;
    if (d && !d.ephemeral && (d.severity === "warning" || d.severity === "error")) {
      diagnostics.push({ severity: d.severity, message: d.message.trim(), ...(d.urn ? { urn: d.urn } : {}) });
    }
  }
  return { steps, plannedTransfers: [...transfers.values()], diagnostics };
}
