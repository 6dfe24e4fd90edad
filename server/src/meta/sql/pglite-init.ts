// Creates a PGlite database directory, then exits: run as a child process by PgliteDriver.open
// for a directory that does not hold a database yet. initdb in WebAssembly grows its heap to
// several hundred MiB and a WebAssembly heap never shrinks, so doing it in the server process
// would keep that memory for the server's whole life.
//
//   node pglite-init.js DATA_DIR
import { inspect } from 'node:util';
import { PGlite } from '@electric-sql/pglite';

const dataDir = process.argv[2];
if (!dataDir) {
  process.stderr.write('usage: pglite-init DATA_DIR\n');
  process.exit(2);
}
try {
  const db = await PGlite.create({ dataDir });
  await db.close();
} catch (err) {
  // PGlite can throw what is not an Error (an Emscripten exit status): say what it was.
  const why = err instanceof Error ? err.message : inspect(err, { depth: 2, breakLength: Infinity });
  process.stderr.write(`could not create the embedded database in ${dataDir}: ${why}\n`);
  process.exit(1);
}
