/** The image's bytes in layout order, fed to the archive validator while a pull runs. */
import type { ChunkRef__Output } from "../../../schema/gen/gci/v1/ChunkRef";
import { dataLoss } from "../../common/errors";
import type { ImageStore } from "../../image";

/**
 * The image's bytes in order, for the archive validator to read while the transfer runs: a
 * chunk the receiver already held is read from the store (verified again on the way), a
 * streamed one is handed over as it arrives. The validator computes the whole digest and
 * checks the archive's rules in the same pass, so nothing is read twice.
 */
export class InOrder implements AsyncIterable<Buffer> {
  private readonly arrived = new Map<number, Buffer>();
  private wake?: () => void;
  private consumedWake?: () => void;
  private failure?: unknown;

  constructor(
    private readonly layout: readonly ChunkRef__Output[],
    private readonly held: ReadonlySet<string>,
    private readonly store: ImageStore,
    private readonly source: string,
  ) {}

  /** A streamed chunk, verified or about to be (putChunk rejects a damaged one). */
  put(index: number, data: Buffer): void {
    this.arrived.set(index, data);
    this.wake?.();
  }

  /** Ends the iteration with `e` (the stream failed), and any wait for room. */
  fail(e: unknown): void {
    this.failure ??= e;
    this.wake?.();
    this.consumedWake?.();
  }

  /** Resolves once fewer than `max` chunks wait for the validator. */
  async room(max: number): Promise<void> {
    while (this.arrived.size >= max && this.failure === undefined) {
      await new Promise<void>((resolve) => (this.consumedWake = resolve));
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (const [index, ref] of this.layout.entries()) {
      const data = this.held.has(ref.sha256)
        ? await this.store.readChunk(ref.sha256)
        : await this.next(index);
      if (data.length !== ref.size) {
        throw dataLoss(
          `chunk #${index} from ${this.source} is ${data.length} bytes, its layout says ${ref.size}: the source is corrupt`,
        );
      }
      yield data;
    }
  }

  /** The streamed chunk #index, once it has arrived; it leaves the waiting room. */
  private async next(index: number): Promise<Buffer> {
    while (!this.arrived.has(index)) {
      if (this.failure !== undefined) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    const data = this.arrived.get(index)!;
    this.arrived.delete(index);
    this.consumedWake?.();
    return data;
  }
}
