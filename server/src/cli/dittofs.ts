#!/usr/bin/env node
// Entry point of the `dittofs` binary (server/dist/cli/dittofs.js).
import { buildProgram } from './program.js';

// The AWS SDK prints a multi-line notice about its future Node.js requirement to stderr when an S3
// client is created; the server's output is JSON lines only, so it is turned off here (the
// supported Node.js versions are stated in README.md and package.json "engines").
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

await buildProgram().parseAsync(process.argv);
