import type { Operation } from "../../schema/gen/gci/v1/Operation";
import type { Progress } from "../../schema/gen/gci/v1/Progress";
import { GciError, notFound } from "../common/errors";
import { statusName } from "../common/rpc/status";

/** A mutable operation record; the registry hands out copies. */
type Op = Operation & { id: string; done: boolean };

/** How many finished operations are kept, at most, and for how long. */
export interface Retention {
  readonly maxDone: number;
  readonly doneTtlMs: number;
}

const RETENTION: Retention = { maxDone: 10_000, doneTtlMs: 24 * 60 * 60_000 };

/**
 * The cluster manager's long-running operations, kept in memory and keyed by id (derived
 * from the request id, so a repeated request finds its operation). Waiters are woken on
 * every change. Finished ones are kept for a day, the newest 10,000 at most: an older repeat
 * starts a new operation, which finds its work done in the catalog (as after a restart).
 */
export class Operations {
  private readonly ops = new Map<string, Op>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private done = 0;
  private prunedAt = 0;

  constructor(
    private readonly datacenter: string,
    private readonly retention: Retention = RETENTION,
  ) {}

  /** Returns the existing operation with this id, or registers a new running one. */
  begin(id: string, kind: string): { op: Operation; created: boolean } {
    const existing = this.ops.get(id);
    if (existing) return { op: { ...existing }, created: false };
    const now = Date.now();
    this.prune(now);
    const op: Op = {
      id,
      kind,
      done: false,
      created_at_ms: now,
      updated_at_ms: now,
      datacenter: this.datacenter,
    };
    this.ops.set(id, op);
    return { op: { ...op }, created: true };
  }

  /** Records progress (bytes, chunks, rate, phase). */
  progress(id: string, progress: Progress): void {
    this.patch(id, { progress: { ...this.ops.get(id)?.progress, ...progress } });
  }

  finish(id: string, result: Partial<Operation> = {}): void {
    this.patch(id, { ...result, done: true });
  }

  fail(id: string, e: unknown): void {
    const message = GciError.isInstance(e) || e instanceof Error ? e.message : String(e);
    this.patch(id, { done: true, error: message, error_code: statusName(e) });
  }

  /** Drops an operation (one refused before it started, so the same request id may be retried). */
  forget(id: string): void {
    if (this.ops.get(id)?.done) this.done--;
    this.ops.delete(id);
  }

  get(id: string): Operation {
    const op = this.ops.get(id);
    if (!op)
      throw notFound(
        `operation "${id}" is not known to datacenter ${this.datacenter}: list them with \`gci transfers\``,
      );
    return { ...op };
  }

  list(includeDone: boolean): Operation[] {
    return [...this.ops.values()].filter((o) => includeDone || !o.done).map((o) => ({ ...o }));
  }

  /** Resolves when the operation is done or `timeoutMs` has passed. */
  async wait(id: string, timeoutMs: number): Promise<Operation> {
    const op = this.get(id);
    if (op.done) return op;
    await new Promise<void>((resolve) => {
      const set = this.waiters.get(id) ?? new Set();
      this.waiters.set(id, set);
      const wake = () => {
        clearTimeout(timer);
        set.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, Math.max(0, Math.min(timeoutMs, 60_000)));
      set.add(wake);
    });
    return this.get(id);
  }

  /** Drops finished operations past their time, then the oldest beyond the count kept. */
  private prune(now: number): void {
    // Over the count at once; past their time, looked for once a minute.
    if (this.done <= this.retention.maxDone && now - this.prunedAt < 60_000) return;
    this.prunedAt = now;
    let excess = this.done - this.retention.maxDone;
    const oldest = now - this.retention.doneTtlMs;
    // Insertion order is start order; a done operation's last change is its end.
    for (const [id, op] of this.ops) {
      if (!op.done) continue;
      if (excess <= 0 && Number(op.updated_at_ms) >= oldest) continue;
      this.ops.delete(id);
      this.waiters.delete(id);
      this.done--;
      excess--;
    }
  }

  private patch(id: string, fields: Partial<Operation>): void {
    const op = this.ops.get(id);
    if (!op) return;
    if (fields.done && !op.done) this.done++;
    Object.assign(op, fields, { updated_at_ms: Date.now() });
    if (op.done) for (const wake of [...(this.waiters.get(id) ?? [])]) wake();
  }
}
