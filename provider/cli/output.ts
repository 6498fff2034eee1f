import { InvalidArgumentError } from "commander";
/** Renders rows as an aligned text table with a header, for people; scripts use --json. */
/**
 * A parser for a whole-number flag from `min` to `max`, for commander: anything else is refused
 * with the value and the range, before any request is sent.
 */
export function wholeNumber(min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`give a whole number from ${min} to ${max}.`);
    }
    return n;
  };
}

export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join("\n");
}

/** Human-readable byte count: 1536 -> "1.5 KiB". */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/**
 * A one-line progress bar redrawn in place on a terminal, or printed at most every few
 * seconds when stderr is not a terminal (CI logs stay readable).
 */
export class ProgressBar {
  private lastPrint = 0;
  private printedFull = false;
  constructor(
    private readonly label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  update(done: number, total: number, suffix = ""): void {
    const now = Date.now();
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    if (this.stream.isTTY) {
      const width = 30;
      const filled = Math.round(frac * width);
      const bar = "#".repeat(filled) + "-".repeat(width - filled);
      this.stream.write(
        `\r${this.label} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${bytes(done)}/${bytes(total)} ${suffix}\x1b[K`,
      );
    } else if (now - this.lastPrint >= 2000 || (done >= total && !this.printedFull)) {
      this.printedFull = done >= total;
      this.stream.write(
        `${this.label} ${(frac * 100).toFixed(0)}% ${bytes(done)}/${bytes(total)} ${suffix}\n`,
      );
      this.lastPrint = now;
    }
  }

  done(message = ""): void {
    if (this.stream.isTTY) this.stream.write(`\r${this.label} ${message}\x1b[K\n`);
    else if (message) this.stream.write(`${this.label} ${message}\n`);
  }
}
