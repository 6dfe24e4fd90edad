#!/usr/bin/env node
// Entry point of the `dittofsctl` binary (server/dist/cli/dittofsctl.js).
import { processIo } from '../ctl/io.js';
import { runCtl } from '../ctl/program.js';

// `dittofsctl user list | head -1`: a reader that goes away early is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const code = await runCtl(process.argv.slice(2), processIo());
// Exit once stdout and stderr are flushed: an open stdin or idle keep-alive sockets must not keep
// the process alive.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
