import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadYaml } from '@kubernetes/client-node';
import { CONFIG_HASH_ANNOTATION, type DittoFS } from '../../api/types.js';
import {
  configHash,
  desiredConfigSecret,
  desiredSecrets,
  desiredServices,
  desiredStatefulSet,
  newAdminSecret,
  newJwtSecret,
  renderServerConfig,
  replicaPlan,
  serverConfig,
} from './desired.js';
import { ADMIN_SECRET_KEYS, childNames } from './names.js';

const dfs = (spec: DittoFS['spec'] = {}, name = 'main'): DittoFS => ({
  apiVersion: 'dittofs.io/v1alpha1',
  kind: 'DittoFS',
  metadata: { name, namespace: 'storage', uid: '1111-2222', generation: 3 },
  spec,
});

const inputs = (d: DittoFS, extra: object = {}) => ({ dfs: d, defaultImage: 'dittofs/server:0.1.0', ...extra });

describe('renderServerConfig', () => {
  it('renders infrastructure only, with the CRD defaults, as the server config file wants it', () => {
    const cfg = loadYaml<Record<string, unknown>>(renderServerConfig(inputs(dfs())));
    assert.deepEqual(cfg, {
      data_dir: '/data',
      logging: { level: 'info', format: 'json', file: '-' },
      adapters: { nfs: { enabled: true, port: 12049, bind: '0.0.0.0' }, smb: { enabled: false, port: 12445, bind: '0.0.0.0' } },
      server: { api: { enabled: true, port: 8080, bind: '0.0.0.0' } },
      database: { type: 'embedded' },
      metrics: { enabled: true, port: 9090, bind: '0.0.0.0' },
      cache: {
        wal_dir: '/data/wal',
        wal_max_bytes: Math.floor(10 * 2 ** 30 * 0.6),
        disk_cache_dir: '/data/cache',
        disk_cache_bytes: Math.floor(10 * 2 ** 30 * 0.3),
      },
      shares: [],
    });
  });

  it('takes log level, adapters, metrics, cache size and the PostgreSQL URL from the spec', () => {
    const d = dfs({
      logLevel: 'debug',
      adapters: { nfs: { port: 2049 }, smb: { enabled: true, port: 445 } },
      metrics: { enabled: false },
      cache: { size: '2Gi' },
      database: { type: 'postgres', postgres: { urlSecretRef: { name: 'pg', key: 'url' }, schema: 'dfs', poolSize: 8 } },
    });
    const cfg = serverConfig(inputs(d, { databaseUrl: 'postgres://u:p@db:5432/x' })) as {
      logging: { level: string };
      adapters: { nfs: { port: number }; smb: { enabled: boolean; port: number } };
      metrics: { enabled: boolean };
      cache: { wal_max_bytes: number };
      database: unknown;
    };
    assert.equal(cfg.logging.level, 'debug');
    assert.equal(cfg.adapters.nfs.port, 2049);
    assert.deepEqual(cfg.adapters.smb, { enabled: true, port: 445, bind: '0.0.0.0' });
    assert.equal(cfg.metrics.enabled, false);
    assert.equal(cfg.cache.wal_max_bytes, Math.floor(2 * 2 ** 30 * 0.6));
    assert.deepEqual(cfg.database, { type: 'postgres', url: 'postgres://u:p@db:5432/x', schema: 'dfs', pool_size: 8 });
    assert.throws(() => serverConfig(inputs(d)), /needs the URL/);
  });

  it('coordination.redis: prefix and TLS in the file, the URL and password from their Secrets in the environment only', () => {
    const d = dfs({
      coordination: {
        redis: {
          urlSecretRef: { name: 'redis', key: 'url' },
          passwordSecretRef: { name: 'redis', key: 'password' },
          tls: { enabled: true },
        },
      },
    });
    const cfg = serverConfig(inputs(d)) as { coordination?: unknown };
    assert.deepEqual(cfg.coordination, { redis: { key_prefix: 'storage/main/', tls: true, password_env: 'REDIS_PASSWORD' } });
    const env = desiredStatefulSet(inputs(d), 'h').spec!.template.spec!.containers[0]!.env!;
    assert.deepEqual(
      env.filter((e) => e.name.includes('REDIS')),
      [
        { name: 'DITTOFS_COORDINATION__REDIS__URL', valueFrom: { secretKeyRef: { name: 'redis', key: 'url' } } },
        { name: 'REDIS_PASSWORD', valueFrom: { secretKeyRef: { name: 'redis', key: 'password' } } },
      ],
    );
    const plain = dfs({ coordination: { redis: { urlSecretRef: { name: 'r', key: 'u' }, keyPrefix: 'x:' } } });
    assert.deepEqual((serverConfig(inputs(plain)) as { coordination?: unknown }).coordination, { redis: { key_prefix: 'x:', tls: false } });
    assert.equal((serverConfig(inputs(dfs())) as { coordination?: unknown }).coordination, undefined, 'no Redis, no key');
    assert.ok(!desiredStatefulSet(inputs(dfs()), 'h').spec!.template.spec!.containers[0]!.env!.some((e) => e.name.includes('REDIS')));
  });

  it('the WAL never goes below the server minimum; the size in force wins over the spec', () => {
    assert.equal(
      (serverConfig(inputs(dfs({ cache: { size: '1Mi' } }))) as { cache: { wal_max_bytes: number } }).cache.wal_max_bytes,
      4 * 2 ** 20,
    );
    const cfg = serverConfig(inputs(dfs({ cache: { size: '20Gi' } }), { cacheSize: '10Gi' })) as { cache: { wal_max_bytes: number } };
    assert.equal(cfg.cache.wal_max_bytes, Math.floor(10 * 2 ** 30 * 0.6));
  });

  it('the hash changes exactly when the rendered config does', () => {
    const a = configHash(renderServerConfig(inputs(dfs({ logLevel: 'info' }))));
    assert.equal(a, configHash(renderServerConfig(inputs(dfs({ logLevel: 'info' })))));
    assert.match(a, /^[0-9a-f]{64}$/);
    assert.notEqual(a, configHash(renderServerConfig(inputs(dfs({ logLevel: 'debug' })))));
    assert.notEqual(a, configHash(renderServerConfig(inputs(dfs({ adapters: { nfs: { port: 3049 } } })))));
    // Not in the config: the image and replicas change the pods without a config roll.
    assert.equal(a, configHash(renderServerConfig(inputs(dfs({ image: 'other:1', replicas: 3 })))));
  });
});

describe('desiredStatefulSet', () => {
  const sts = desiredStatefulSet(
    inputs(dfs({ replicas: 2, cache: { size: '5Gi', storageClassName: 'fast' }, resources: { limits: { memory: '1Gi', cpu: 2 } } })),
    'abc',
  );
  const pod = sts.spec!.template.spec!;
  const c = pod.containers[0]!;

  it('runs the image with the config from its Secret and the generated credentials', () => {
    assert.equal(sts.metadata!.name, 'main');
    // Two asked for, without a PostgreSQL database and a Redis: one (see replicaPlan).
    assert.equal(sts.spec!.replicas, 1);
    assert.equal(sts.spec!.serviceName, 'main-headless');
    assert.equal(c.image, 'dittofs/server:0.1.0');
    assert.deepEqual(c.args, ['start']);
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom?.secretKeyRef]));
    assert.deepEqual(env, {
      DITTOFS_CONFIG: '/etc/dittofs/config.yaml',
      DITTOFS_DATA_DIR: '/data',
      DITTOFS_JWT_SECRET: { name: 'main-jwt', key: 'jwt-secret' },
      DITTOFS_ADMIN_INITIAL_PASSWORD: { name: 'main-admin', key: ADMIN_SECRET_KEYS.initialPassword },
    });
    const cfgVol = pod.volumes!.find((v) => v.name === 'config')!;
    assert.equal(cfgVol.secret!.secretName, 'main-config');
    assert.deepEqual(
      c.volumeMounts!.map((m) => [m.name, m.mountPath]),
      [
        ['data', '/data'],
        ['config', '/etc/dittofs'],
        ['tmp', '/tmp'],
      ],
    );
    assert.equal(sts.spec!.template.metadata!.annotations![CONFIG_HASH_ANNOTATION], 'abc');
    assert.deepEqual(c.resources, { limits: { memory: '1Gi', cpu: '2' } });
  });

  it('has the WAL volume claim, probes on the API port, the ports, a non-root security context', () => {
    const vct = sts.spec!.volumeClaimTemplates![0]!;
    assert.equal(vct.metadata!.name, 'data');
    assert.equal(vct.spec!.storageClassName, 'fast');
    assert.deepEqual(vct.spec!.resources!.requests, { storage: '5Gi' });
    assert.deepEqual(c.livenessProbe!.httpGet, { path: '/health', port: 'api' });
    assert.deepEqual(c.readinessProbe!.httpGet, { path: '/health/ready', port: 'api' });
    assert.deepEqual(
      c.ports!.map((p) => [p.name, p.containerPort]),
      [
        ['nfs', 12049],
        ['api', 8080],
        ['metrics', 9090],
      ],
    );
    assert.equal(c.securityContext!.runAsNonRoot, true);
    assert.equal(c.securityContext!.runAsUser, 10001);
    assert.equal(c.securityContext!.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext!.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext!.capabilities, { drop: ['ALL'] });
    assert.equal(pod.securityContext!.fsGroup, 10001);
    assert.ok(pod.volumes!.some((v) => v.name === 'tmp' && v.emptyDir !== undefined));
    assert.equal(pod.automountServiceAccountToken, false);
    assert.equal(pod.enableServiceLinks, false);
  });

  it('selects its pods by labels that never change', () => {
    assert.deepEqual(sts.spec!.selector.matchLabels, { 'app.kubernetes.io/name': 'dittofs', 'app.kubernetes.io/instance': 'main' });
    for (const [k, v] of Object.entries(sts.spec!.selector.matchLabels ?? {})) assert.equal(sts.spec!.template.metadata!.labels![k], v);
  });

  it('image: the spec wins over the default', () => {
    assert.equal(desiredStatefulSet(inputs(dfs({ image: 'registry/x:2' })), 'h').spec!.template.spec!.containers[0]!.image, 'registry/x:2');
  });
});

describe('children', () => {
  const d = dfs({ adapters: { smb: { enabled: true } }, service: { type: 'LoadBalancer', annotations: { 'lb/kind': 'nlb' } } });

  it('every child but the admin and JWT Secrets has the DittoFS as its controlling owner; those two outlive it', () => {
    const [headless, client] = desiredServices(d);
    const secrets = desiredSecrets(d, 'x');
    const owned = [desiredStatefulSet(inputs(d), 'h'), headless, client, secrets.config];
    for (const o of [...owned, secrets.jwt, secrets.admin]) {
      assert.deepEqual(
        o.metadata!.ownerReferences,
        owned.includes(o)
          ? [
              {
                apiVersion: 'dittofs.io/v1alpha1',
                kind: 'DittoFS',
                name: 'main',
                uid: '1111-2222',
                controller: true,
                blockOwnerDeletion: true,
              },
            ]
          : undefined,
        o.metadata!.name,
      );
      assert.equal(o.metadata!.namespace, 'storage');
      assert.equal(o.metadata!.labels!['app.kubernetes.io/managed-by'], 'dittofs-operator');
      assert.equal(o.metadata!.labels!['app.kubernetes.io/instance'], 'main');
    }
    assert.throws(() => desiredServices({ ...d, metadata: { name: 'x' } }), /no uid/);
  });

  it('a headless Service for pod DNS and a client Service of the asked type with its annotations', () => {
    const [headless, client] = desiredServices(d);
    assert.equal(headless.metadata!.name, childNames('main').headlessService);
    assert.equal(headless.spec!.clusterIP, 'None');
    assert.equal(headless.spec!.publishNotReadyAddresses, true);
    assert.equal(client.metadata!.name, 'main');
    assert.equal(client.spec!.type, 'LoadBalancer');
    assert.deepEqual(client.metadata!.annotations, { 'lb/kind': 'nlb' });
    assert.deepEqual(
      client.spec!.ports!.map((p) => [p.name, p.port]),
      [
        ['nfs', 12049],
        ['smb', 12445],
        ['api', 8080],
      ],
    );
  });

  it('generated Secrets: fresh random values each time they are generated, the config as data', () => {
    const a = newAdminSecret(d);
    const b = newAdminSecret(d);
    const dec = (s: typeof a, k: string) => Buffer.from(s.data![k]!, 'base64').toString('utf8');
    assert.equal(dec(a, 'username'), 'admin');
    assert.notEqual(dec(a, 'password'), dec(b, 'password'));
    assert.notEqual(dec(a, 'password'), dec(a, 'initial-password'));
    assert.ok(dec(a, 'password').length >= 32);
    assert.ok(dec(newJwtSecret(d), 'jwt-secret').length >= 32, 'the server wants at least 32 characters');
    assert.equal(dec(desiredConfigSecret(d, 'a: 1\n'), 'config.yaml'), 'a: 1\n');
  });
});

describe('replicaPlan: more than one pod only with a PostgreSQL database and a Redis to coordinate them', () => {
  const pg = { type: 'postgres' as const, postgres: { urlSecretRef: { name: 'pg', key: 'url' } } };
  const redis = { redis: { urlSecretRef: { name: 'redis', key: 'url' } } };

  it('0 or 1 replica: as asked, nothing to say', () => {
    assert.deepEqual(replicaPlan(dfs({})), { replicas: 1 });
    assert.deepEqual(replicaPlan(dfs({ replicas: 0 })), { replicas: 0 });
    assert.deepEqual(replicaPlan(dfs({ replicas: 1, database: pg, coordination: redis })), { replicas: 1 });
  });

  it('more without a PostgreSQL database or a Redis (the CRD rule bypassed): one, naming what is missing', () => {
    const embedded = replicaPlan(dfs({ replicas: 3 }));
    assert.equal(embedded.replicas, 1);
    assert.equal(embedded.limited?.reason, 'CoordinationRequired');
    assert.match(embedded.limited?.message ?? '', /^replicas 3 > 1 requires database\.type postgres and coordination\.redis /);
    const noRedis = replicaPlan(dfs({ replicas: 3, database: pg }));
    assert.equal(noRedis.replicas, 1);
    assert.match(noRedis.limited?.message ?? '', /requires coordination\.redis \(/);
    const noPg = replicaPlan(dfs({ replicas: 2, coordination: redis }));
    assert.match(noPg.limited?.message ?? '', /requires database\.type postgres \(/);
  });

  it('more with both: every pod asked for, and the config tells each server where Redis is', () => {
    const d = dfs({ replicas: 3, database: pg, coordination: redis });
    assert.deepEqual(replicaPlan(d), { replicas: 3 });
    const sts = desiredStatefulSet(inputs(d, { databaseUrl: 'postgres://db/x' }), 'h');
    assert.equal(sts.spec!.replicas, 3);
    // Independent servers: all started at once, each with its own WAL volume.
    assert.equal(sts.spec!.podManagementPolicy, 'Parallel');
    assert.deepEqual(
      sts.spec!.volumeClaimTemplates!.map((t) => t.spec!.accessModes),
      [['ReadWriteOnce']],
    );
    const cfg = serverConfig(inputs(d, { databaseUrl: 'postgres://db/x' })) as { coordination?: unknown; database?: unknown };
    assert.deepEqual(cfg.coordination, { redis: { key_prefix: 'storage/main/', tls: false } });
    assert.deepEqual(cfg.database, { type: 'postgres', url: 'postgres://db/x' });
    const env = sts.spec!.template.spec!.containers[0]!.env ?? [];
    assert.deepEqual(env.find((e) => e.name === 'DITTOFS_COORDINATION__REDIS__URL')?.valueFrom, {
      secretKeyRef: { name: 'redis', key: 'url' },
    });
  });
});
