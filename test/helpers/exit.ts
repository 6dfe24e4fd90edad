// What test helpers undo when the test process ends: the servers, databases, Kubernetes control
// planes and port reservations they made. 'exit' does not fire when a signal ends a process, so a
// test stopped from outside (a CI timeout, Ctrl-C, a closed terminal) would leave them running; a
// stop signal instead exits with the shell's code for it (128 + n), which runs every hook once, in
// the order they were registered. Further signals meanwhile are ignored: the hooks run to their end.
import os from 'node:os';

const hooks: (() => void)[] = [];
let installed = false;

/** How a test run is stopped from outside. */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/** Runs `hook` (synchronous: it runs on 'exit') when this process ends, also by a stop signal. */
export function onProcessExit(hook: () => void): void {
  hooks.push(hook);
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    for (const h of hooks.splice(0)) {
      try {
        h();
      } catch (e) {
        // The other hooks still run; what this one should have ended may be left: say so.
        process.stderr.write(`test clean-up at exit failed (something may be left running): ${String(e)}\n`);
      }
    }
  });
  // process.exit() runs the hooks synchronously and never returns, so no second signal's handler
  // can run meanwhile: it waits in the event loop, which does not turn again.
  for (const sig of STOP_SIGNALS) process.on(sig, () => process.exit(128 + os.constants.signals[sig]));
}
