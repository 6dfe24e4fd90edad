// A node:test reporter that prints, once every test file has run, how long each file took: the
// sum of its top-level tests' and suites' durations (what its tests took, without the start of
// the process), slowest first, and the number of failures. `make test` uses it beside `spec` to
// show where the time of a run goes.
//
//   node --import tsx --test --test-reporter=spec --test-reporter-destination=stdout \
//     --test-reporter=./test/reporters/file-times.mjs --test-reporter-destination=stdout FILES...
import path from 'node:path';
import process from 'node:process';

// JavaScript, not TypeScript: node loads reporters before --import hooks such as tsx apply.

/**
 * @param {AsyncIterable<{ type: string, data: { nesting?: number, file?: string, details?: { duration_ms?: number } } }>} source
 * @returns {AsyncGenerator<string>}
 */
export default async function* fileTimes(source) {
  /** @type {Map<string, { ms: number, tests: number, failed: number }>} */
  const files = new Map();
  for await (const ev of source) {
    if (ev.type !== 'test:pass' && ev.type !== 'test:fail') continue;
    if (ev.data.nesting !== 0 || ev.data.file === undefined) continue;
    const f = files.get(ev.data.file) ?? { ms: 0, tests: 0, failed: 0 };
    f.ms += ev.data.details?.duration_ms ?? 0;
    f.tests++;
    if (ev.type === 'test:fail') f.failed++;
    files.set(ev.data.file, f);
  }
  if (files.size === 0) return;
  const rows = [...files.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((s, [, f]) => s + f.ms, 0);
  /** @param {number} ms */
  const secs = (ms) => `${(ms / 1000).toFixed(1)} s`.padStart(9);
  let out = `\nℹ time per test file (top-level tests and suites; ${process.env.DITTOFS_TEST_JOBS ?? 'several'} files at a time), ${secs(total).trim()} in all:\n`;
  for (const [file, f] of rows) {
    out += `ℹ ${secs(f.ms)}  ${path.relative(process.cwd(), file)}${f.failed > 0 ? `  (${f.failed} of ${f.tests} failed)` : ''}\n`;
  }
  yield out;
}
