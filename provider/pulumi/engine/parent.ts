/**
 * The plugin hosts live only as long as the engine that started them. A `pulumi up` killed with
 * SIGKILL cannot stop its plugins, and a host serving gRPC keeps its event loop alive for ever:
 * one pair was seen running for 29 minutes under PID 1 after such a kill. When its parent dies,
 * Linux gives a process a new parent (init or a subreaper), so a changed parent pid means the
 * engine is gone and nobody will call again.
 * @internal
 */

/** How often a host looks at its parent pid: an orphan lingers at most this long. */
const PARENT_POLL_MS = 500;

/**
 * Exits this process once the engine that started it has gone: the pid the plugin shim saw as
 * its parent ($GCI_ENGINE_PID), else this process's parent now.
 */
export function exitWithParent(): void {
  const parent = Number(process.env.GCI_ENGINE_PID) || process.ppid;
  const timer = setInterval(() => {
    // Nothing is written first: the engine read the host's stderr through a pipe that is now
    // broken, and a failed write would throw before the exit (the stock dynamic host keeps
    // running after uncaught exceptions).
    if (process.ppid !== parent) process.exit(0);
  }, PARENT_POLL_MS);
  // The poll alone never keeps a host alive: a host with nothing else to do ends as before.
  timer.unref();
}
