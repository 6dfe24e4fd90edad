// Records the RPC records a real client sends, as hex, for decoder fixtures.
// Usage: npx tsx hack/capture-frames.mts LISTEN_PORT SERVER_PORT OUT.json   (then point a client at LISTEN_PORT)
// Stops after 20 s or 200 records.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { RecordReader } from '../server/src/rpc/record.js';

const [listenPort, serverPort, out] = process.argv.slice(2);
if (!listenPort || !serverPort || !out) throw new Error('usage: capture-frames.mts LISTEN_PORT SERVER_PORT OUT.json');
const records: string[] = [];
const srv = net.createServer((c) => {
  const up = net.connect(Number(serverPort), '127.0.0.1');
  const rr = new RecordReader(4 * 1024 * 1024);
  c.on('data', (d: Buffer) => {
    for (const r of rr.push(d)) if (records.length < 200) records.push(r.toString('hex'));
    up.write(d);
  });
  up.on('data', (d) => c.write(d));
  c.on('error', () => up.destroy());
  up.on('error', () => c.destroy());
  c.on('close', () => up.destroy());
  up.on('close', () => c.destroy());
});
srv.listen(Number(listenPort), '127.0.0.1');
const stop = (): void => {
  writeFileSync(out, JSON.stringify(records, null, 1) + '\n');
  process.exit(0);
};
setTimeout(stop, 20_000);
process.on('SIGTERM', stop);
