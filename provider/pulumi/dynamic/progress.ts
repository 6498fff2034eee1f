import type { Operation } from "../../common/client";

const MiB = 1024 * 1024;

/** Bytes as people read them: "40.0 MiB". */
export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

/**
 * Progress of one resource's long operation, printed as engine diagnostics (a dynamic
 * provider's console.log reaches the engine, which shows it under the resource's name in
 * `pulumi up`). Operation updates are throttled to one line every `everyMs`, plus one for
 * each change of phase, so a long transfer shows without flooding the display.
 */
export class ProgressReporter {
  private lastAt = 0;
  private lastPhase = "";

  constructor(
    private readonly label: string,
    private readonly everyMs = 2000,
  ) {}

  /** One line, always shown. */
  say(message: string): void {
    console.log(`gci: ${this.label}: ${message}`);
  }

  /** An operation's state, throttled. */
  operation(op: Operation): void {
    const phase = op.progress?.phase ?? "";
    const now = Date.now();
    if (phase === this.lastPhase && now - this.lastAt < this.everyMs && !op.done) return;
    this.lastAt = now;
    this.lastPhase = phase;
    this.say(describe(op));
  }
}

/** "transfer into eu-1: 12.0 / 40.0 MiB at 3.1 MiB/s" and the like. */
export function describe(op: Operation): string {
  const p = op.progress;
  const where = op.datacenter ? ` in ${op.datacenter}` : "";
  if (op.done) return op.error ? `${op.kind}${where} failed: ${op.error}` : `${op.kind}${where} done`;
  if (p?.phase === "transfer" && p.bytes_total) {
    const rate = p.rate ? ` at ${mib(p.rate)}/s` : "";
    return `image transfer into ${op.datacenter}: ${mib(Number(p.bytes_done))} / ${mib(Number(p.bytes_total))}${rate}`;
  }
  return `${op.kind}${where}: ${p?.phase || "running"}`;
}
