#!/usr/bin/env node
// Launcher for the compiled CLI (server/dist), so the bin link exists before the first build.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli/dittofsctl.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('dittofsctl: the server is not built yet; run "make build" (or "npm run build") first');
  process.exit(1);
}
await import(cli.href);
