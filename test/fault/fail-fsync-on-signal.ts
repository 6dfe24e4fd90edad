// Loaded into a DittoFS process under test (NODE_OPTIONS="--import tsx --import <this file>"): once
// the process gets SIGUSR2, the next fdatasync of a file whose path contains
// DITTOFS_TEST_FAIL_FSYNC fails with EIO, as on a failing disk (server/src/testing/failing-fsync.ts).
import { failNextFdatasync } from '../../server/src/testing/failing-fsync.js';

const part = process.env.DITTOFS_TEST_FAIL_FSYNC;
if (part) process.on('SIGUSR2', () => failNextFdatasync((file) => file.includes(part)));
