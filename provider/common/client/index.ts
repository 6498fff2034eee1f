import { Readable } from "stream";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import type { HealthCheckRequest } from "grpc-health-check/build/src/generated/grpc/health/v1/HealthCheckRequest";
import type { HealthCheckResponse__Output } from "grpc-health-check/build/src/generated/grpc/health/v1/HealthCheckResponse";
import type { ClusterManagerClient } from "../../../schema/gen/gci/v1/ClusterManager";
import type { ListImagesRequest } from "../../../schema/gen/gci/v1/ListImagesRequest";
import type { ListImagesResponse__Output } from "../../../schema/gen/gci/v1/ListImagesResponse";
import type { ListVmsRequest } from "../../../schema/gen/gci/v1/ListVmsRequest";
import type { ListVmsResponse__Output } from "../../../schema/gen/gci/v1/ListVmsResponse";
import type { GetVmLogsRequest } from "../../../schema/gen/gci/v1/GetVmLogsRequest";
import type { VmLogs__Output } from "../../../schema/gen/gci/v1/VmLogs";
import type { ListOperationsRequest } from "../../../schema/gen/gci/v1/ListOperationsRequest";
import type { ListOperationsResponse__Output } from "../../../schema/gen/gci/v1/ListOperationsResponse";
import type { Image__Output as Image } from "../../../schema/gen/gci/v1/Image";
import type { Operation__Output as Operation } from "../../../schema/gen/gci/v1/Operation";
import type { PeerClient } from "../../../schema/gen/gci/v1/Peer";
import type { StartPlan__Output as StartPlan } from "../../../schema/gen/gci/v1/StartPlan";
import type { StartVmsRequest } from "../../../schema/gen/gci/v1/StartVmsRequest";
import type { TransmitImageRequest } from "../../../schema/gen/gci/v1/TransmitImageRequest";
import type { TransmitImageResponse__Output } from "../../../schema/gen/gci/v1/TransmitImageResponse";
import type { UploadHeader } from "../../../schema/gen/gci/v1/UploadHeader";
import type { Vm__Output as Vm } from "../../../schema/gen/gci/v1/Vm";
import { CHANNEL_OPTIONS, loadApi } from "../rpc/proto";
import { fromStatus } from "../rpc/status";
import { IDEMPOTENT, Retrier, RetryOptions, withRetry } from "./retry";

export type { Image, Operation, StartPlan, StartVmsRequest, Vm };
export { IDEMPOTENT, isNotFound, isUnavailable, retryBoundMs } from "./retry";
export type { RetryEvent, RetryOptions } from "./retry";
export { waitForOperation } from "./wait";
export type { WaitOptions } from "./wait";

/** Options of a ClusterClient. */
export interface ClusterClientArgs {
  /**
   * Deadline of each unary call, in milliseconds.
   * @default 30000
   */
  readonly deadlineMs?: number;
  /**
   * Metadata sent with every call: a cluster manager that forwards a call marks the hops
   * (see daemon/server.ts, "gci-hops" and "gci-via").
   * @default none
   */
  readonly metadata?: Readonly<Record<string, string>>;
  /**
   * Makes this a client of a datacenter rather than of one endpoint: on UNAVAILABLE, an
   * idempotent call (see retry.ts) looks the endpoint up again with `resolve` (the catalog
   * records where each cluster manager listens now) and is sent again, within `retry`.
   * @default none: every call goes to the endpoint given, once
   */
  readonly datacenter?: { readonly name: string; readonly resolve: () => Promise<string | undefined> };
  readonly retry?: RetryOptions;
}

/**
 * The standard Health service's Check. grpc-health-check exports its definition untyped (a
 * ServiceDefinition of objects) and no client, so a plain grpc.Client calls Check through it,
 * and the response is read as the package's generated message type.
 */
const CHECK = healthService.Check;
const checkResponse = (bytes: Buffer) => CHECK.responseDeserialize(bytes) as HealthCheckResponse__Output;

/**
 * One unary method of the generated ClusterManagerClient, called with metadata, call options
 * and a callback: the typed stub method behind each of ClusterClient's calls.
 */
type Unary<Req, Res> = (
  cm: ClusterManagerClient,
  req: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<Res>,
) => grpc.ClientUnaryCall;

/** The three service stubs of one channel to one endpoint. */
interface Connection {
  readonly endpoint: string;
  readonly cm: ClusterManagerClient;
  readonly peer: PeerClient;
  readonly health: grpc.Client;
}

function connect(endpoint: string): Connection {
  const { api } = loadApi();
  const creds = grpc.credentials.createInsecure();
  const cm = new api.gci.v1.ClusterManager(endpoint, creds, CHANNEL_OPTIONS);
  // One channel for all three services: the peer and health clients reuse the first one's.
  const channelOverride = cm.getChannel();
  const peer = new api.gci.v1.Peer(endpoint, creds, { ...CHANNEL_OPTIONS, channelOverride });
  const health = new grpc.Client(endpoint, creds, { channelOverride });
  return { endpoint, cm, peer, health };
}

const UPLOAD_PART = 1024 * 1024;

/**
 * A typed, promise-based client of one cluster manager. Every call has a deadline; errors
 * come back as GciErrors with the server's code and message.
 */
export class ClusterClient {
  private conn: Connection;
  private readonly deadlineMs: number;
  private readonly metadata: Readonly<Record<string, string>>;
  private readonly retrier?: Retrier;
  private closed = false;

  constructor(
    endpoint: string,
    private readonly args: ClusterClientArgs = {},
  ) {
    this.conn = connect(endpoint);
    this.deadlineMs = args.deadlineMs ?? 30_000;
    this.metadata = args.metadata ?? {};
    const dc = args.datacenter;
    if (dc) {
      this.retrier = {
        datacenter: dc.name,
        endpoint: () => this.conn.endpoint,
        reconnect: () => this.reconnect(dc.resolve),
      };
    }
  }

  /** Where the next call goes (changes when a datacenter client re-resolves). */
  get endpoint(): string {
    return this.conn.endpoint;
  }

  /** The datacenter this client follows, if it is a datacenter client. */
  get datacenter(): string | undefined {
    return this.args.datacenter?.name;
  }

  /**
   * A fresh channel to the endpoint the resolver names now. Fresh also when the endpoint is
   * the same: the old channel backs off between reconnects (up to minutes) and would fail
   * calls meanwhile. A failing resolver (the catalog unreachable) keeps the last endpoint.
   */
  private async reconnect(resolve: () => Promise<string | undefined>): Promise<void> {
    const endpoint = (await resolve().catch(() => undefined)) || this.conn.endpoint;
    if (this.closed) return;
    const old = this.conn;
    this.conn = connect(endpoint);
    old.cm.close();
  }

  /**
   * Calls `invoke` (the stub method named `method`), retried on a datacenter client when the
   * method is idempotent (retry.ts names them).
   */
  private call<Req, Res>(
    method: string,
    invoke: Unary<Req, Res>,
    req: Req,
    deadlineMs = this.deadlineMs,
  ): Promise<Res> {
    const once = () => this.callOnce(invoke, req, deadlineMs);
    if (!this.retrier || !IDEMPOTENT.has(method)) return once();
    return withRetry(this.retrier, method, this.args.retry ?? {}, once);
  }

  private callOnce<Req, Res>(invoke: Unary<Req, Res>, req: Req, deadlineMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      for (const [key, value] of Object.entries(this.metadata)) metadata.set(key, value);
      invoke(this.conn.cm, req, metadata, { deadline: Date.now() + deadlineMs }, (err, res) =>
        err ? reject(fromStatus(err)) : resolve(res as Res),
      );
    });
  }

  /** The standard health check: "SERVING" when the cluster manager is up. */
  checkHealth(deadlineMs = 5000): Promise<string> {
    return new Promise((resolve, reject) => {
      const req: HealthCheckRequest = { service: "" };
      this.conn.health.makeUnaryRequest<HealthCheckRequest, HealthCheckResponse__Output>(
        CHECK.path,
        CHECK.requestSerialize,
        checkResponse,
        req,
        { deadline: Date.now() + deadlineMs },
        (err, res) => (err ? reject(fromStatus(err)) : resolve(res!.status)),
      );
    });
  }

  /**
   * Streams an image archive to the cluster manager; `onBytes` sees the running total sent.
   * Never retried, not even before the first byte: the source is a one-pass stream.
   */
  uploadImage(source: Readable, header: UploadHeader, onBytes?: (sent: number) => void): Promise<Image> {
    return new Promise((resolve, reject) => {
      const stream = this.conn.cm.uploadImage((err, res) => (err ? reject(fromStatus(err)) : resolve(res!)));
      stream.write({ header });
      let sent = 0;
      source.on("data", (buf: Buffer) => {
        for (let off = 0; off < buf.length; off += UPLOAD_PART) {
          const part = buf.subarray(off, off + UPLOAD_PART);
          sent += part.length;
          if (!stream.write({ data: part })) {
            source.pause();
            stream.once("drain", () => source.resume());
          }
        }
        onBytes?.(sent);
      });
      source.on("end", () => stream.end());
      source.on("error", (e) => {
        stream.cancel();
        reject(e);
      });
    });
  }

  getImage(digest: string): Promise<Image> {
    return this.call("getImage", (cm, r, md, o, cb) => cm.getImage(r, md, o, cb), { digest });
  }

  async listImages(localOnly = false): Promise<Image[]> {
    return (
      await this.call<ListImagesRequest, ListImagesResponse__Output>(
        "listImages",
        (cm, r, md, o, cb) => cm.listImages(r, md, o, cb),
        {
          local_only: localOnly,
        },
      )
    ).images;
  }

  deleteImage(requestId: string, digest: string): Promise<Image> {
    return this.call("deleteImage", (cm, r, md, o, cb) => cm.deleteImage(r, md, o, cb), {
      request_id: requestId,
      digest,
    });
  }

  startVms(req: StartVmsRequest): Promise<Operation> {
    return this.call("startVms", (cm, r, md, o, cb) => cm.startVms(r, md, o, cb), req);
  }

  /** Where a StartVms would run and which transfer it would cause; changes nothing. */
  planStartVms(req: StartVmsRequest): Promise<StartPlan> {
    return this.call("planStartVms", (cm, r, md, o, cb) => cm.planStartVms(r, md, o, cb), req);
  }

  /** Sets the number of VMs of a start request (adds or stops instances). */
  scaleVms(requestId: string, startRequestId: string, count: number): Promise<Operation> {
    return this.call("scaleVms", (cm, r, md, o, cb) => cm.scaleVms(r, md, o, cb), {
      request_id: requestId,
      start_request_id: startRequestId,
      count,
    });
  }

  /** VMs of this datacenter, or of one start request. */
  async listVms(startRequestId = ""): Promise<Vm[]> {
    return (
      await this.call<ListVmsRequest, ListVmsResponse__Output>(
        "listVms",
        (cm, r, md, o, cb) => cm.listVms(r, md, o, cb),
        {
          request_id: startRequestId,
        },
      )
    ).vms;
  }

  getVm(id: string): Promise<Vm> {
    return this.call("getVm", (cm, r, md, o, cb) => cm.getVm(r, md, o, cb), { id });
  }

  /** Stops the VMs of a start request (or only `vmIds`); the group is forgotten when none is left. */
  stopVms(requestId: string, startRequestId: string, vmIds: string[] = []): Promise<Operation> {
    return this.call("stopVms", (cm, r, md, o, cb) => cm.stopVms(r, md, o, cb), {
      request_id: requestId,
      start_request_id: startRequestId,
      vm_ids: vmIds,
    });
  }

  restartVm(requestId: string, vmId: string): Promise<Operation> {
    return this.call("restartVm", (cm, r, md, o, cb) => cm.restartVm(r, md, o, cb), {
      request_id: requestId,
      vm_id: vmId,
    });
  }

  /** The tail of a VM's serial console (or a process instance's output). */
  async getVmLogs(vmId: string, tailBytes = 65536): Promise<string> {
    return (
      await this.call<GetVmLogsRequest, VmLogs__Output>(
        "getVmLogs",
        (cm, r, md, o, cb) => cm.getVmLogs(r, md, o, cb),
        {
          vm_id: vmId,
          tail_bytes: tailBytes,
        },
      )
    ).text;
  }

  /** Copies an image into a datacenter ahead of any VM (forwarded there). */
  replicateImage(requestId: string, digest: string, datacenter: string): Promise<Operation> {
    return this.call("replicateImage", (cm, r, md, o, cb) => cm.replicateImage(r, md, o, cb), {
      request_id: requestId,
      digest,
      datacenter,
    });
  }

  getOperation(id: string): Promise<Operation> {
    return this.call("getOperation", (cm, r, md, o, cb) => cm.getOperation(r, md, o, cb), { id });
  }

  /** Waits up to timeoutMs for the operation to finish (the server holds the call). */
  waitOperation(id: string, timeoutMs: number): Promise<Operation> {
    return this.call(
      "waitOperation",
      (cm, r, md, o, cb) => cm.waitOperation(r, md, o, cb),
      { id, timeout_ms: timeoutMs },
      timeoutMs + 10_000,
    );
  }

  async listOperations(includeDone = false): Promise<Operation[]> {
    return (
      await this.call<ListOperationsRequest, ListOperationsResponse__Output>(
        "listOperations",
        (cm, r, md, o, cb) => cm.listOperations(r, md, o, cb),
        {
          include_done: includeDone,
        },
      )
    ).operations;
  }

  /** The peer stream: asks this cluster manager to transmit an image. */
  transmitImage(req: TransmitImageRequest): grpc.ClientReadableStream<TransmitImageResponse__Output> {
    return this.conn.peer.transmitImage(req);
  }

  close(): void {
    this.closed = true;
    this.conn.cm.close();
  }
}
