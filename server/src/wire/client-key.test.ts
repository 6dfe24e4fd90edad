import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientKey } from './client-key.js';

describe('clientKey', () => {
  it('keeps an IPv4 address, and reads an IPv4-mapped IPv6 address as that IPv4 address', () => {
    assert.equal(clientKey('192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('::ffff:c000:207'), '192.0.2.7');
  });

  it('counts the addresses of one IPv6 /64 as one client, and other /64s apart', () => {
    const a = clientKey('2001:db8:1:2:a:b:c:d');
    assert.equal(a, '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), a, 'another address of the same /64, written long');
    assert.equal(clientKey('2001:db8:1:2::1'), a);
    assert.notEqual(clientKey('2001:db8:1:3::1'), a);
    assert.equal(clientKey('::1'), '::/64');
    assert.equal(clientKey('fe80::1%eth0'), 'fe80::/64', 'a zone id does not make a new client');
  });

  it('keeps what is not an address as it is', () => {
    assert.equal(clientKey('unknown'), 'unknown');
    assert.equal(clientKey(''), '');
  });
});
