/**
 * The etcd catalog's client, shared by its record modules: the whole-operation retry, JSON
 * decoding, checked reads and lists, and the transaction helpers (create-if-absent and
 * compare-and-swap on a key's revision).
 */

import { ClientClosedError, Etcd3, IKeyValue, Namespace, isRecoverableError } from "etcd3";

import { GciError, dataLoss, precondition, unavailable } from "../common/errors";
import { keyName } from "./etcd-keys";
import { BadRecordReporter, readAll, readBack } from "./validate";

/** Bounds the compare-and-swap loops; each round only fails when another client wrote meanwhile. */
export const MAX_CAS_ROUNDS = 50;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What {@link EtcdStore} needs: checked endpoints and prefix, and the timeouts. */
export interface EtcdStoreArgs {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly callTimeoutMs: number;
  readonly operationTimeoutMs: number;
  readonly onBadRecord: BadRecordReporter;
}

/** A stored value and its key-value (for its revisions). */
export interface Found<T> {
  readonly value: T;
  readonly kv: IKeyValue;
}

/** One client on the cluster and what every operation on it needs. */
export class EtcdStore {
  readonly ns: Namespace;
  private readonly client: Etcd3;

  constructor(private readonly args: EtcdStoreArgs) {
    const { callTimeoutMs } = args;
    this.client = new Etcd3({
      hosts: args.endpoints.map((e) => `http://${e}`),
      // A deadline on every unary call, so a member that accepts the connection but never
      // answers (no quorum, partitioned) fails over instead of hanging the caller.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
      grpcOptions: {
        // Reconnect quickly to a member that comes back.
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 2000,
      },
    });
    this.ns = this.client.namespace(args.prefix);
  }

  /**
   * Runs one whole catalog operation, again from the start when a member fails. etcd3 already
   * retries a single request on other members; retrying the operation as a whole also covers a
   * compare-and-swap whose answer was lost, because the rerun reads what actually happened.
   */
  async run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.args.operationTimeoutMs;
    let delay = 50;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        const err = this.retryable(what, e);
        if (Date.now() + delay > deadline) throw this.noMember(what, err);
        await sleep(delay);
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /** The failure `e` of one attempt when another attempt may succeed; throws it (as a GciError) otherwise. */
  private retryable(what: string, e: unknown): Error {
    if (GciError.isInstance(e)) throw e;
    const err = e instanceof Error ? e : new Error(String(e));
    if (err instanceof ClientClosedError) {
      throw precondition(`could not ${what}: this etcd catalog client is closed; open a new one.`);
    }
    // etcd3 opens a member's circuit breaker after three failures in a row; when every
    // member's is open it fails at once, though the members may be back in a moment.
    const broken = (err as { isBrokenCircuitError?: boolean }).isBrokenCircuitError === true;
    if (!broken && !isRecoverableError(err)) {
      throw new GciError(
        "INTERNAL",
        `could not ${what} in the etcd catalog at ${this.hosts()}: ${err.message}.`,
      );
    }
    return err;
  }

  private noMember(what: string, last: Error): GciError {
    return unavailable(
      `could not ${what}: no member of the etcd catalog at ${this.hosts()} answered within ` +
        `${this.args.operationTimeoutMs} ms (last error: ${last.message}). Check that a majority of the ` +
        `members is running: etcdctl --endpoints=${this.hosts()} endpoint health.`,
    );
  }

  private hosts(): string {
    return this.args.endpoints.join(",");
  }

  decode<T>(key: string, value: Buffer | string): T {
    try {
      return JSON.parse(value.toString()) as T;
    } catch (e) {
      throw dataLoss(
        `etcd catalog key "${this.args.prefix}${key}" does not hold JSON (${(e as Error).message}); ` +
          `delete or repair it with etcdctl.`,
      );
    }
  }

  async getOne<T>(key: string): Promise<Found<T> | undefined> {
    const res = await this.ns.get(key).exec();
    const kv = res.kvs[0];
    return kv && { value: this.decode<T>(key, kv.value), kv };
  }

  async list<T>(prefix: string): Promise<T[]> {
    const all = await this.ns.getAll().prefix(prefix).strings();
    return Object.entries(all).map(([k, v]) => this.decode<T>(k, v));
  }

  /**
   * The record at `key`, checked as a write is (validate.ts readBack): the cluster can be written
   * around GCI. A bad one is DATA_LOSS naming it.
   */
  async getChecked<T>(key: string, kind: string, check: (record: T) => T): Promise<T | undefined> {
    const found = await this.getOne<T>(key);
    return found && readBack(kind, keyName(key), check, found.value);
  }

  /** The valid records under `prefix`; each bad one is left out and reported. */
  async listChecked<T>(prefix: string, kind: string, check: (record: T) => T): Promise<T[]> {
    const all = await this.ns.getAll().prefix(prefix).strings();
    return readAll(
      Object.entries(all),
      ([k, v]) => readBack(kind, keyName(k), check, this.decode<T>(k, v)),
      this.args.onBadRecord,
    );
  }

  /** Puts `value` at `key` unless it exists; returns the stored value either way. */
  async putIfAbsent<T>(key: string, value: T): Promise<T> {
    const tx = await this.ns
      .if(key, "Create", "==", 0)
      .then(this.ns.put(key).value(JSON.stringify(value)))
      .else(this.ns.get(key))
      .commit();
    if (tx.succeeded) return value;
    // The compare and the read run in one transaction, so the key is there.
    const kv = tx.responses[0]?.response_range?.kvs[0];
    if (!kv) throw new GciError("INTERNAL", `etcd answered a failed create of "${key}" without the key.`);
    return this.decode<T>(key, kv.value);
  }

  /**
   * Reads `key`, lets `change` compute the new value (or a result without writing), and
   * writes it only if nobody wrote the key meanwhile; rereads and recomputes otherwise.
   */
  async cas<T, R>(
    key: string,
    change: (current: T | undefined) => { write?: T | null; result: R },
  ): Promise<R> {
    for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
      const cur = await this.getOne<T>(key);
      const { write, result } = change(cur?.value);
      if (write === undefined) return result;
      const op = write === null ? this.ns.delete().key(key) : this.ns.put(key).value(JSON.stringify(write));
      const guard = cur
        ? this.ns.if(key, "Mod", "==", cur.kv.mod_revision)
        : this.ns.if(key, "Create", "==", 0);
      const tx = await guard.then(op).commit();
      if (tx.succeeded) return result;
    }
    throw casExhausted(key);
  }

  close(): void {
    this.client.close();
  }
}

/** UNAVAILABLE for a key that kept changing under every compare-and-swap round. */
export function casExhausted(key: string): GciError {
  return unavailable(
    `etcd catalog key "${key}" kept changing under ${MAX_CAS_ROUNDS} attempts to update it; ` +
      `too many writers contend for it. Retry later.`,
  );
}
