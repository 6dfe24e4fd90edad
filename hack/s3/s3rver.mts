// A local S3-protocol server (s3rver) for tests and development, on 127.0.0.1 only.
// Usage: node --import tsx hack/s3/s3rver.mts PORT DIR [BUCKET...]
//   PORT 0 picks a free port. Objects live in DIR, so a restart on the same DIR keeps them. The
//   buckets are created if missing. Prints "s3rver ready http://127.0.0.1:PORT" once it accepts
//   requests. Access key id and secret: S3RVER / S3RVER (s3rver checks the key id, not the signature).
// Exits on SIGTERM/SIGINT at once, dropping open connections (as an outage would), and when the
// parent that started it with an IPC channel goes away (test/helpers/s3.ts), so none is left behind.
import S3rver from 's3rver';

const [portArg, dir, ...buckets] = process.argv.slice(2);
const port = Number(portArg);
if (!Number.isInteger(port) || port < 0 || port > 65535 || dir === undefined || dir === '') {
  console.error('usage: node --import tsx hack/s3/s3rver.mts PORT DIR [BUCKET...]');
  process.exit(2);
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
if (process.connected) process.on('disconnect', () => process.exit(0));

const server = new S3rver({
  address: '127.0.0.1',
  port,
  directory: dir,
  silent: true,
  configureBuckets: buckets.map((name) => ({ name, configs: [] })),
});
try {
  const { port: actual } = await server.run();
  console.log(`s3rver ready http://127.0.0.1:${actual}`);
} catch (err) {
  console.error(`s3rver could not start on 127.0.0.1:${port}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
