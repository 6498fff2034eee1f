import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as ImagesProto } from "../../../schema/gen/images";
import type { ProtoGrpcType as PeerProto } from "../../../schema/gen/peer";
import { packageRoot } from "../paths";

/** The .proto files of the API, relative to schema/. */
export const PROTO_FILES = ["gci/v1/images.proto", "gci/v1/operations.proto", "gci/v1/peer.proto"];

/** Options matching scripts/gen-proto.sh, so runtime messages have the generated types. */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [],
};

let cached: { definition: protoLoader.PackageDefinition; api: ImagesProto & PeerProto } | undefined;

/** The loaded API: service constructors for clients, definitions for servers, and the raw package definition (for reflection). */
export function loadApi(): { definition: protoLoader.PackageDefinition; api: ImagesProto & PeerProto } {
  if (!cached) {
    const schema = path.join(packageRoot(), "schema");
    const definition = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [schema] });
    cached = {
      definition,
      api: grpc.loadPackageDefinition(definition) as unknown as ImagesProto & PeerProto,
    };
  }
  return cached;
}

/** HTTP/2 streams one connection may have open at once (grpc.max_concurrent_streams). */
export const MAX_CONCURRENT_STREAMS = 64;

/**
 * Channel options shared by servers and clients: room for 4 MiB chunks plus framing, and an
 * HTTP/2 flow-control window of 16 MiB (the 64 KiB default stalls a 4 MiB chunk on round
 * trips; measured: 180 MiB/s -> see README's transfer figures).
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
  "grpc-node.flow_control_window": 16 * 1024 * 1024,
  // A peer that stops answering (stopped, or its host gone) is noticed within about 15 s, on
  // either side: its calls fail instead of waiting forever.
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
};

/**
 * A cluster manager's server options: the channel options, at most MAX_CONCURRENT_STREAMS
 * streams per connection, and a cap on what one HTTP/2 session may buffer (grpc-js leaves it
 * unlimited), so one connection cannot make the daemon hold more than that.
 */
export const SERVER_OPTIONS: grpc.ServerOptions = {
  ...CHANNEL_OPTIONS,
  "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
  // In MB, as Node's http2 maxSessionMemory.
  "grpc-node.max_session_memory": 256,
};

/** The standard health service's definition (schema/grpc/health/v1), for server reflection. */
export function loadHealthDefinition(): protoLoader.PackageDefinition {
  const schema = path.join(packageRoot(), "schema");
  return protoLoader.loadSync("grpc/health/v1/health.proto", { ...LOADER_OPTIONS, includeDirs: [schema] });
}
