import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, parseConfig, parseDuration, type OperatorConfig } from './config.js';

const cfg = (argv: string[], env: NodeJS.ProcessEnv = {}): OperatorConfig => {
  const r = parseConfig(argv, env);
  assert.ok('config' in r);
  return r.config;
};

describe('parseConfig', () => {
  it('defaults: all namespaces, leader election on, pod DNS, 5 minute resync', () => {
    const c = cfg([], {});
    assert.deepEqual(c.namespaces, []);
    assert.equal(c.leaderElection.enabled, true);
    assert.equal(c.leaderElection.leaseName, 'dittofs-operator-leader');
    assert.equal(c.leaderElection.leaseNamespace.length > 0, true);
    assert.equal(c.podAddressMode, 'dns');
    assert.equal(c.resyncMs, 300_000);
    assert.match(c.defaultImage, /^ghcr\.io\/dittofs\/dittofs:\d+\.\d+\.\d+/);
    assert.equal(c.healthPort, 8081);
  });

  it('environment, and flags over it', () => {
    const env = {
      WATCH_NAMESPACES: 'a, b,,a',
      DITTOFS_OPERATOR_POD_ADDRESS: 'annotation',
      DITTOFS_OPERATOR_LEADER_ELECT: 'false',
      DITTOFS_OPERATOR_RESYNC: '30s',
      POD_NAMESPACE: 'ops',
      DITTOFS_OPERATOR_LOG_LEVEL: 'debug',
    };
    const c = cfg([], env);
    assert.deepEqual(c.namespaces, ['a', 'b']);
    assert.equal(c.podAddressMode, 'annotation');
    assert.equal(c.leaderElection.enabled, false);
    assert.equal(c.leaderElection.leaseNamespace, 'ops');
    assert.equal(c.resyncMs, 30_000);
    assert.equal(c.logLevel, 'debug');
    const f = cfg(['--namespaces', 'c', '--pod-address', 'ip', '--resync', '2m', '--kubeconfig', '/k', '--lease-namespace', 'x'], env);
    assert.deepEqual(f.namespaces, ['c']);
    assert.equal(f.podAddressMode, 'ip');
    assert.equal(f.resyncMs, 120_000);
    assert.equal(f.kubeconfig, '/k');
    assert.equal(f.leaderElection.leaseNamespace, 'x');
  });

  it('refuses what it does not understand, naming it', () => {
    assert.throws(
      () => parseConfig(['--pod-address', 'magic'], {}),
      (e: unknown) => e instanceof ConfigError && /magic/.test(e.message),
    );
    assert.throws(() => parseConfig(['--bogus'], {}), ConfigError);
    assert.throws(() => parseConfig([], { WATCH_NAMESPACES: 'Bad_NS' }), /not a valid name/);
    assert.throws(() => parseConfig([], { DITTOFS_OPERATOR_LEADER_ELECT: 'maybe' }), /true or false/);
    assert.throws(() => parseConfig([], { DITTOFS_OPERATOR_CONCURRENCY: '0' }), /integer from 1/);
    assert.deepEqual(parseConfig(['--help'], {}), { help: true });
  });

  it('durations', () => {
    assert.equal(parseDuration('90'), 90_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.throws(() => parseDuration('soon'), ConfigError);
  });
});
