import { createRequire } from 'node:module';

// Same relative path from src/ctl/ (tsx) and dist/ctl/ (built).
const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
export const CTL_VERSION = pkg.version;
