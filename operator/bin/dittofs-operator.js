#!/usr/bin/env node
// Launcher for the compiled operator (operator/dist), so the bin link exists before the first build.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('dittofs-operator: the operator is not built yet; run "make build" (or "npm run build") first');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
// Handles (timers, sockets) of a stopped operator must not keep the process alive.
setTimeout(() => process.exit(process.exitCode), 100).unref();
