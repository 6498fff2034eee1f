/** The clocks of a stream: an idle timer, and a pull's watch (idle limit plus deadline). */
import { GciError } from "../../common/errors";
import { STREAM_BASE_MS, STREAM_IDLE_MS, STREAM_MIN_RATE, streamDeadlineMs } from "./limits";

/** Calls `onIdle` once if `restart` is not called again within `ms`; `stop` pauses it. */
export class IdleTimer {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
  ) {}

  restart(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(this.onIdle, this.ms);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * The two clocks of one pull: the idle limit (nothing from the source for STREAM_IDLE_MS) and
 * the deadline (streamDeadlineMs of the image's bytes). Either one aborts
 * `signal`, which cancels the stream and closes the data socket; `reason` says which.
 */
export class TransferWatch {
  readonly idle: IdleTimer;
  reason?: GciError;
  private readonly abort = new AbortController();
  private deadline?: NodeJS.Timeout;

  constructor(
    private readonly digest: string,
    private readonly source: string,
  ) {
    this.idle = new IdleTimer(STREAM_IDLE_MS, () =>
      this.fail(
        `the transfer of ${digest} from ${source} sent nothing for ${STREAM_IDLE_MS / 1000} s (the idle ` +
          `limit of uploads and transfers): the source is stopped or unreachable; the pull tries again, ` +
          `from another datacenter if one holds the image`,
      ),
    );
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Ends the pull now with `reason` (the image is being removed here). */
  cancel(reason: GciError): void {
    this.stop();
    this.reason ??= reason;
    this.abort.abort(this.reason);
  }

  /** Starts the deadline once the image's size is known. */
  startDeadline(bytes: number): void {
    const ms = streamDeadlineMs(bytes);
    this.deadline = setTimeout(
      () =>
        this.fail(
          `the transfer of ${this.digest} (${bytes} bytes) from ${this.source} did not finish within ` +
            `${Math.round(ms / 1000)} s, its deadline (${STREAM_BASE_MS / 1000} s plus the time its bytes ` +
            `take at ${STREAM_MIN_RATE / 1024} KiB/s): the source or the network is too slow; the pull tries again`,
        ),
      ms,
    );
  }

  stop(): void {
    this.idle.stop();
    clearTimeout(this.deadline);
  }

  private fail(message: string): void {
    this.cancel(new GciError("DEADLINE_EXCEEDED", message));
  }
}
