// checkListenAddresses: the start-up check that runs before anything is created.
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { defaultConfig } from './config/index.js';
import { checkListenAddresses } from './server.js';

function loopbackConfig(ports: { nfs: number; smb: number; api: number; metrics: number }) {
  const c = defaultConfig();
  c.adapters.nfs.bind = c.adapters.smb.bind = c.server.api.bind = c.metrics.bind = '127.0.0.1';
  c.adapters.nfs.port = ports.nfs;
  c.adapters.smb.port = ports.smb;
  c.server.api.port = ports.api;
  c.metrics.port = ports.metrics;
  return c;
}

describe('checkListenAddresses', () => {
  it('accepts several listeners on port 0 (each gets a free port of its own)', async () => {
    await checkListenAddresses(loopbackConfig({ nfs: 0, smb: 0, api: 0, metrics: 0 }));
  });

  it('refuses two settings naming the same port, naming both settings', async () => {
    await assert.rejects(
      checkListenAddresses(loopbackConfig({ nfs: 0, smb: 0, api: 40123, metrics: 40123 })),
      /the metrics endpoint and the API are both set to port 40123; change metrics\.port/,
    );
  });

  it('refuses a port another process holds, before anything is created', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as net.AddressInfo).port;
    try {
      await assert.rejects(checkListenAddresses(loopbackConfig({ nfs: port, smb: 0, api: 0, metrics: 0 })), /NFS/);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });
});
