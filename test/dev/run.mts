import pino from 'pino';
import { loadConfig } from '../../server/src/config/index.js';
import { startServer } from '../../server/src/server.js';
const { config } = await loadConfig({
  env: {
    ...process.env,
    DITTOFS_DATA_DIR: '/tmp/dev/data',
    DITTOFS_NFS_PORT: '22049',
    DITTOFS_API_PORT: '28080',
    DITTOFS_BIND_ADDRESS: '127.0.0.1',
    DITTOFS_SMB_ENABLED: 'false',
    DITTOFS_METRICS_ENABLED: 'false',
  },
});
const log = pino({ level: process.env.LL ?? 'info' });
const s = await startServer(config, log);
process.on('SIGTERM', () => void s.close().then(() => process.exit(0)));
