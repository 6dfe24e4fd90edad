import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { trustedProxy, trustProxyProblem } from './trust-proxy.js';

describe('trusted proxies', () => {
  it('matches addresses, CIDR ranges and presets, an IPv4-mapped IPv6 peer as its IPv4 address', () => {
    const t = trustedProxy(['10.0.0.0/8', '192.0.2.7', 'fd00::/64', 'loopback']);
    for (const a of ['10.1.2.3', '::ffff:10.1.2.3', '192.0.2.7', 'fd00::1', '127.0.0.9', '::1']) assert.equal(t(a), true, a);
    for (const a of ['11.0.0.1', '192.0.2.8', 'fd00:0:0:1::1', '::ffff:192.0.2.8', '2001:db8::1']) assert.equal(t(a), false, a);
  });

  it('trusts nothing that is not an address (X-Forwarded-For holds what the client wrote)', () => {
    const t = trustedProxy(['0.0.0.0/0', '::/0']);
    for (const a of ['', 'unknown', '10.0.0.1:80', '[::1]', '127.1', 'x'.repeat(1000)]) assert.equal(t(a), false, a);
    assert.equal(t('203.0.113.1'), true);
  });

  it('true trusts every peer, false and an empty list none', () => {
    assert.equal(trustedProxy(true)('203.0.113.1'), true);
    assert.equal(trustedProxy(false)('127.0.0.1'), false);
    assert.equal(trustedProxy([])('127.0.0.1'), false);
  });

  it('names the first bad entry', () => {
    assert.equal(trustProxyProblem(['10.0.0.0/8', 'uniquelocal', '::1']), undefined);
    assert.match(trustProxyProblem(['10.0.0.0/8', 'localhost']) ?? '', /^"localhost" is not an IP address/);
    assert.equal(trustProxyProblem(['fd00::1/64']), '"fd00::1/64" has bits set past its prefix: the range is fd00::/64');
    assert.equal(trustProxyProblem(['::/129']), '"::/129": the prefix length must be 0 to 128');
    assert.match(trustProxyProblem(['10.0.0.0/8/8']) ?? '', /is not an IP address/);
    assert.throws(() => trustedProxy(['nope']), /^Error: trust_proxy: "nope" is not an IP address/);
  });
});
