/** A structured log line: one JSON object per line on stdout, with the request id when there is one. */
export interface LogFields {
  readonly requestId?: string;
  readonly [key: string]: unknown;
}

/** Writes one JSON object per line: time, level, datacenter, event, then the fields. */
export class Logger {
  constructor(
    private readonly datacenter: string,
    private readonly out: NodeJS.WritableStream = process.stdout,
  ) {}

  info(event: string, fields: LogFields = {}): void {
    this.write("info", event, fields);
  }

  warn(event: string, fields: LogFields = {}): void {
    this.write("warn", event, fields);
  }

  error(event: string, fields: LogFields = {}): void {
    this.write("error", event, fields);
  }

  private write(level: string, event: string, fields: LogFields): void {
    const line = { ts: new Date().toISOString(), level, dc: this.datacenter, event, ...fields };
    this.out.write(JSON.stringify(line) + "\n");
  }
}
