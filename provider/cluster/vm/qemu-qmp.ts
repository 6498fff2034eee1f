/** QEMU's QMP socket, spoken just enough to ask a guest's QEMU to quit. */

import * as fs from "fs";
import * as net from "net";
import * as path from "path";

/**
 * Asks QEMU to quit through its QMP socket; resolves when QEMU closes the connection.
 * Socket paths longer than sun_path (108 bytes) are reached through /proc/self/fd.
 */
export function qmpQuit(socketPath: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let dirFd: number | undefined;
    let target = socketPath;
    if (Buffer.byteLength(socketPath) >= 108) {
      dirFd = fs.openSync(path.dirname(socketPath), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      target = `/proc/self/fd/${dirFd}/${path.basename(socketPath)}`;
    }
    const socket = net.createConnection(target);
    const done = (error?: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (dirFd !== undefined) fs.closeSync(dirFd);
      dirFd = undefined;
      if (error) reject(error);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`QMP quit timed out after ${timeoutMs} ms`)), timeoutMs);
    let buffered = "";
    let step: "greeting" | "capabilities" | "quit" = "greeting";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line === "") continue;
        let message: { QMP?: unknown; return?: unknown; error?: { desc?: string } };
        try {
          message = JSON.parse(line) as typeof message;
        } catch {
          done(new Error(`QMP sent a line that is not JSON: ${line.slice(0, 200)}`));
          return;
        }
        if (message.error !== undefined) {
          done(new Error(`QMP refused ${step}: ${message.error.desc ?? line}`));
          return;
        }
        if (step === "greeting" && message.QMP !== undefined) {
          step = "capabilities";
          socket.write(JSON.stringify({ execute: "qmp_capabilities" }) + "\n");
        } else if (step === "capabilities" && message.return !== undefined) {
          step = "quit";
          socket.write(JSON.stringify({ execute: "quit" }) + "\n");
        }
      }
    });
    socket.on("error", (e) => done(e));
    socket.on("close", () => (step === "quit" ? done() : done(new Error("QMP closed before quit"))));
  });
}
