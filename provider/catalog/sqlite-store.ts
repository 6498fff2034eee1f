/**
 * The SQLite catalog's connection, shared by its record modules: opening the file (WAL, busy
 * timeout, migration), the prepared-statement cache, and the step runner that turns SQLite
 * failures into GciErrors.
 */

import * as fs from "fs";
import * as path from "path";
import Database from "better-sqlite3";

import { GciError, precondition, unavailable } from "../common/errors";
import { migrate } from "./sqlite-schema";
import { BadRecordReporter, readAll } from "./validate";

/** One open catalog file and what every operation on it needs. */
export class SqliteStore {
  readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  /** Opens (creating if missing) the file at the absolute path `file`, migrated to the current schema. */
  constructor(
    readonly file: string,
    readonly busyTimeoutMs: number,
    private readonly onBadRecord: BadRecordReporter,
  ) {
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      this.db = new Database(file);
    } catch (e) {
      throw precondition(
        `cannot open the SQLite catalog "${file}": ${(e as Error).message}. ` +
          `Check that the directory is writable by this user.`,
      );
    }
    try {
      this.db.pragma(`busy_timeout = ${Math.floor(busyTimeoutMs)}`);
      // Switching a new file to WAL takes an exclusive lock and SQLite answers BUSY at once
      // (without the busy handler) while another process opens the same file: retry it.
      this.retryBusy(() => this.db.pragma("journal_mode = WAL"));
      // WAL + NORMAL survives process crashes; only an OS crash can lose the last commits.
      this.db.pragma("synchronous = NORMAL");
      this.retryBusy(() => migrate(this.db, file));
    } catch (e) {
      this.db.close();
      throw this.wrap("open the catalog", e);
    }
  }

  /** Runs `fn`, retrying while SQLite answers BUSY, for up to the busy timeout. */
  private retryBusy<T>(fn: () => T): T {
    const deadline = Date.now() + this.busyTimeoutMs;
    for (;;) {
      try {
        return fn();
      } catch (e) {
        const code = (e as { code?: unknown }).code;
        if (typeof code !== "string" || !code.startsWith("SQLITE_BUSY") || Date.now() > deadline) throw e;
        // A synchronous pause: the constructor cannot await.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 + Math.random() * 20);
      }
    }
  }

  /** A prepared statement, compiled once per connection. */
  stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  /** The valid records of `rows`; each bad one is left out and reported. */
  all<R, T>(rows: unknown[], read: (row: R) => T): T[] {
    return readAll(rows as R[], read, this.onBadRecord);
  }

  /** Runs one step synchronously, turning SQLite failures into GciErrors. */
  run<T>(what: string, fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(this.wrap(what, e));
    }
  }

  /** Runs `fn` in a BEGIN IMMEDIATE transaction: the write lock is taken before its first read. */
  immediate<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  private wrap(what: string, e: unknown): Error {
    if (GciError.isInstance(e)) return e;
    const err = e as Error & { code?: string };
    if (typeof err.code === "string" && err.code.startsWith("SQLITE_BUSY")) {
      return unavailable(
        `could not ${what}: the SQLite catalog "${this.file}" stayed locked by another process for ` +
          `${this.busyTimeoutMs} ms. Retry, or find the process holding a long write on it.`,
      );
    }
    if (!this.db.open) {
      return precondition(`could not ${what}: the SQLite catalog "${this.file}" is closed; open a new one.`);
    }
    return new GciError(
      "INTERNAL",
      `could not ${what} in the SQLite catalog "${this.file}": ${err.message ?? String(e)}.`,
    );
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
