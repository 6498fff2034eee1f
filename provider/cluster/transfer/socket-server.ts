/**
 * The sender's data socket: a one-connection listener that accepts only the receiver presenting
 * a fresh token, then holds that connection to the idle limit.
 */
import { randomBytes, timingSafeEqual } from "crypto";
import * as net from "net";
import type * as grpc from "@grpc/grpc-js";
import type { TransmitImageResponse } from "../../../schema/gen/gci/v1/TransmitImageResponse";
import { unavailable } from "../../common/errors";
import { DATA_SOCKET_CONNECT_MS, STREAM_IDLE_MS, TOKEN_WAIT_MS } from "./limits";

type ResponseCall = grpc.ServerWritableStream<unknown, TransmitImageResponse>;

/** Writes `msg` on the stream; resolves once the stream takes more. */
export function write(call: ResponseCall, msg: TransmitImageResponse): Promise<void> {
  return new Promise((resolve) => {
    if (call.write(msg)) resolve();
    else call.once("drain", resolve);
  });
}

/**
 * Listens on `host` for the one connection that presents a fresh token, tells the receiver
 * where (a DataSocket message), and resolves with that connection. The listener closes as soon
 * as it has it, or after DATA_SOCKET_CONNECT_MS.
 */
export async function openDataSocket(call: ResponseCall, host: string): Promise<net.Socket> {
  const token = randomBytes(16).toString("hex");
  const server = net.createServer();
  const pending = new Set<net.Socket>();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  try {
    const accepted = acceptOne(server, call, token, pending);
    accepted.catch(() => undefined); // awaited below; a timeout must not go unhandled meanwhile
    const { port } = server.address() as net.AddressInfo;
    await write(call, { data_socket: { address: `${host}:${port}`, token } });
    return await accepted;
  } finally {
    server.close();
    // Connections that never presented the token go with the listener.
    for (const socket of pending) socket.destroy();
  }
}

/** The first connection to `server` that presents `token`; rejects on the connect timeout or a cancel. */
function acceptOne(
  server: net.Server,
  call: ResponseCall,
  token: string,
  pending: Set<net.Socket>,
): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          unavailable(`the receiver did not connect to the data socket within ${DATA_SOCKET_CONNECT_MS} ms`),
        ),
      DATA_SOCKET_CONNECT_MS,
    );
    call.once("cancelled", () => {
      clearTimeout(timer);
      reject(unavailable("the receiver cancelled the transfer"));
    });
    server.on("connection", (socket) => {
      pending.add(socket);
      awaitToken(socket, token, () => {
        pending.delete(socket);
        clearTimeout(timer);
        resolve(socket);
      });
      socket.on("close", () => pending.delete(socket));
    });
  });
}

/** Calls `onPresented` once `socket` has sent `token`; closes it if it sends another or none in time. */
function awaitToken(socket: net.Socket, token: string, onPresented: () => void): void {
  socket.setNoDelay(true);
  // A connection that does not present the token soon is closed, so none can be held open.
  const tokenLate = (): void => {
    socket.destroy();
  };
  socket.setTimeout(TOKEN_WAIT_MS, tokenLate);
  let presented = Buffer.alloc(0);
  const onData = (piece: Buffer) => {
    presented = Buffer.concat([presented, piece]);
    if (presented.length < token.length) return;
    socket.off("data", onData);
    if (!timingSafeEqual(presented.subarray(0, token.length), Buffer.from(token))) {
      socket.destroy();
      return;
    }
    socket.off("timeout", tokenLate);
    // From now on, a receiver that stops reading for the idle limit ends the transfer.
    socket.setTimeout(STREAM_IDLE_MS, () =>
      socket.destroy(
        unavailable(`the receiver read nothing from the data socket for ${STREAM_IDLE_MS / 1000} s`),
      ),
    );
    onPresented();
  };
  socket.on("data", onData);
  socket.on("error", () => socket.destroy());
}
