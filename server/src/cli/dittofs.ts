#!/usr/bin/env node
// Entry point of the `dittofs` binary (server/dist/cli/dittofs.js).
import { buildProgram } from './program.js';

await buildProgram().parseAsync(process.argv);
