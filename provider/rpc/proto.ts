import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as ImagesProto } from "../../schema/gen/images";
import type { ProtoGrpcType as PeerProto } from "../../schema/gen/peer";
import { packageRoot } from "../engine/paths";

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

/**
 * Channel options shared by servers and clients: room for 4 MiB chunks plus framing, and an
 * HTTP/2 flow-control window of 16 MiB (the 64 KiB default stalls a 4 MiB chunk on round
 * trips; measured: 180 MiB/s -> see README's transfer figures).
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
  "grpc-node.flow_control_window": 16 * 1024 * 1024,
};

/** The standard health service's definition (schema/grpc/health/v1), for server reflection. */
export function loadHealthDefinition(): protoLoader.PackageDefinition {
  const schema = path.join(packageRoot(), "schema");
  return protoLoader.loadSync("grpc/health/v1/health.proto", { ...LOADER_OPTIONS, includeDirs: [schema] });
}
