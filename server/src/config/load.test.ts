import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultConfig, MiB } from './defaults.js';
import { NAMED_ENV_OVERRIDES } from './env.js';
import { ConfigError, maskUrlPassword, redactSecrets, type ConfigIssue } from './errors.js';
import { BUILT_IN_SOURCE, loadConfig, parseConfig, validateConfig } from './load.js';
import { formatConfig } from './render.js';
import { SAMPLE_CONFIG_YAML } from './sample.js';
import { editDistance, SCHEMA, suggest, type SchemaNode } from './schema.js';
import type { DittoConfig } from './types.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CWD = '/srv/ditto';

/** The config a file with nothing in it gives, with paths resolved against CWD. */
function expectedDefaults(): DittoConfig {
  const c = defaultConfig();
  c.data_dir = path.join(CWD, 'data');
  const store = c.blocks.stores.default;
  assert.ok(store);
  store.path = path.join(CWD, 'data', 'blocks', 'default');
  const meta = c.metadata.stores.default;
  assert.ok(meta);
  meta.path = path.join(CWD, 'data', 'metadata', 'default');
  return c;
}

const parse = (yaml: string, env: NodeJS.ProcessEnv = {}): DittoConfig => parseConfig(yaml, env, 'test.yaml', { cwd: CWD });

/** Runs fn, which must throw a ConfigError, and returns its issues. */
function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'DITTOFS_CONFIG_INVALID');
    return [...err.issues];
  }
  assert.fail('expected a ConfigError');
}

const yamlIssues = (yaml: string, env: NodeJS.ProcessEnv = {}): ConfigIssue[] => issuesOf(() => parse(yaml, env));

/** Asserts that exactly one issue has this path, and that its message matches. */
function assertIssue(issues: ConfigIssue[], p: string, message: RegExp | string): void {
  const hits = issues.filter((i) => i.path === p);
  assert.equal(hits.length, 1, `expected one issue at ${p}, got: ${JSON.stringify(issues, null, 1)}`);
  const hit = hits[0] as ConfigIssue;
  if (typeof message === 'string') assert.equal(hit.message, message);
  else assert.match(hit.message, message);
}

describe('defaults', () => {
  it('defaultConfig has the documented values', () => {
    const c = defaultConfig();
    assert.equal(c.data_dir, './data');
    assert.deepEqual(c.logging, { level: 'info', format: 'json' });
    assert.deepEqual(c.adapters.nfs, {
      enabled: true,
      port: 12049,
      bind: '0.0.0.0',
      max_record_size: 1024 * 1024 + 64 * 1024,
      drc_size: 1024,
      max_connections: 1024,
      max_connections_per_address: 256,
      handshake_timeout: 30_000,
      idle_timeout: 360_000,
      max_buffered_request_bytes: 256 * 1024 * 1024,
      portmapper: { enabled: false, port: 10111 },
    });
    assert.deepEqual(c.adapters.smb, {
      enabled: true,
      port: 12445,
      bind: '0.0.0.0',
      signing_required: false,
      encryption_required: false,
      oplock_break_timeout: 35000,
      durable_handle_timeout: 16 * 60_000,
      max_connections: 1024,
      max_connections_per_address: 256,
      handshake_timeout: 60_000,
      max_opens_per_user: 16384,
      idle_timeout: 15 * 60_000,
      max_buffered_request_bytes: 256 * 1024 * 1024,
    });
    assert.deepEqual(c.server.api, {
      enabled: true,
      port: 8080,
      bind: '0.0.0.0',
      bcrypt_cost: 10,
      max_connections: 1024,
      max_connections_per_address: 256,
      trust_proxy: false,
      rate_limit: { max: 600, login_max: 10, login_address_max: 60 },
    });
    assert.deepEqual(c.database, { type: 'embedded' });
    assert.deepEqual(c.metrics, { enabled: true, port: 9090, bind: '0.0.0.0' });
    assert.deepEqual(c.cache, {
      wal_max_bytes: 1024 * MiB,
      max_dirty_bytes: 256 * MiB,
      read_cache_bytes: 64 * MiB,
      disk_cache_bytes: 1024 * MiB,
    });
    assert.deepEqual(c.metadata.stores, { default: { type: 'embedded', path: path.join('data', 'metadata', 'default') } });
    assert.deepEqual(c.blocks.stores, {
      default: { type: 'filesystem', block_size: 4 * MiB, path: path.join('data', 'blocks', 'default') },
    });
    assert.deepEqual(c.shares, [
      {
        name: '/export',
        metadata: 'default',
        blocks: 'default',
        read_only: false,
        root_squash: false,
        anonymous_uid: 65534,
        anonymous_gid: 65534,
        root_mode: 0o777,
        root_uid: 0,
        root_gid: 0,
      },
    ]);
  });

  it('returns a fresh object each call', () => {
    const a = defaultConfig();
    a.adapters.nfs.port = 1;
    a.shares.length = 0;
    assert.equal(defaultConfig().adapters.nfs.port, 12049);
    assert.equal(defaultConfig().shares.length, 1);
  });

  it('an empty file, a null document and an empty object give the defaults with resolved paths', () => {
    assert.deepEqual(parse(''), expectedDefaults());
    assert.deepEqual(parse('# only a comment\n'), expectedDefaults());
    assert.deepEqual(parse('~\n'), expectedDefaults());
    assert.deepEqual(validateConfig({}, { cwd: CWD }), expectedDefaults());
    assert.deepEqual(validateConfig(undefined, { cwd: CWD }), expectedDefaults());
  });

  it('validateConfig accepts its own output unchanged', () => {
    const c = expectedDefaults();
    assert.deepEqual(validateConfig(c, { cwd: '/elsewhere' }), c);
  });

  it('merges a partial file over the defaults', () => {
    const c = parse('adapters:\n  nfs:\n    port: 2049\ncache:\n  read_cache_bytes: 1GiB\n');
    const want = expectedDefaults();
    want.adapters.nfs.port = 2049;
    want.cache.read_cache_bytes = 1024 * MiB;
    assert.deepEqual(c, want);
  });

  it('a section left empty (null) takes its defaults', () => {
    assert.deepEqual(parse('adapters:\n  nfs:\nmetadata:\n  stores:\n'), expectedDefaults());
  });
});

describe('default stores and share', () => {
  it('shares without stores get the default stores', () => {
    const c = parse('shares:\n  - name: /a\n  - name: /b\n    read_only: true\n');
    assert.deepEqual(Object.keys(c.metadata.stores), ['default']);
    assert.deepEqual(Object.keys(c.blocks.stores), ['default']);
    assert.deepEqual(
      c.shares.map((s) => [s.name, s.metadata, s.blocks, s.read_only]),
      [
        ['/a', 'default', 'default', false],
        ['/b', 'default', 'default', true],
      ],
    );
  });

  it('an explicit empty shares list means no shares', () => {
    const c = parse('shares: []\n');
    assert.deepEqual(c.shares, []);
    assert.deepEqual(Object.keys(c.blocks.stores), ['default']);
  });

  it('stores without shares: no default share, no default stores', () => {
    const c = parse('metadata:\n  stores:\n    m: {type: memory}\nblocks:\n  stores:\n    b: {type: memory}\n');
    assert.deepEqual(c.shares, []);
    assert.deepEqual(c.metadata.stores, { m: { type: 'memory' } });
    assert.deepEqual(c.blocks.stores, { b: { type: 'memory', block_size: 4 * MiB } });
  });

  it('the default block store follows data_dir, also when set from the environment', () => {
    assert.equal(parse('data_dir: /var/lib/ditto\n').blocks.stores.default?.path, '/var/lib/ditto/blocks/default');
    assert.equal(parse('', { DITTOFS_DATA_DIR: '/mnt/x' }).blocks.stores.default?.path, '/mnt/x/blocks/default');
  });

  it('a filesystem store without path is placed under data_dir by name', () => {
    const c = parse('metadata: {stores: {m: {type: memory}}}\nblocks: {stores: {fast-ssd: {type: filesystem}}}\n');
    assert.equal(c.blocks.stores['fast-ssd']?.path, path.join(CWD, 'data', 'blocks', 'fast-ssd'));
  });
});

describe('paths', () => {
  it('relative paths resolve against the working directory; absolute ones are kept', () => {
    const c = parse(
      'data_dir: state\nblocks:\n  stores:\n    a: {type: filesystem, path: ../blk}\n    b: {type: filesystem, path: /abs/blk}\nmetadata:\n  stores:\n    default: {type: memory}\n',
    );
    assert.equal(c.data_dir, '/srv/ditto/state');
    assert.equal(c.blocks.stores.a?.path, '/srv/blk');
    assert.equal(c.blocks.stores.b?.path, '/abs/blk');
  });

  it('~/ means the home directory', () => {
    assert.equal(parse('data_dir: ~/ditto\n').data_dir, path.join(os.homedir(), 'ditto'));
  });

  it('defaults to process.cwd()', () => {
    assert.equal(validateConfig({ data_dir: 'x' }).data_dir, path.resolve(process.cwd(), 'x'));
  });
});

describe('values', () => {
  it('accepts human sizes and numbers', () => {
    const c = parse(
      'cache:\n  max_dirty_bytes: 1GiB\n  read_cache_bytes: 1048576\nadapters:\n  nfs:\n    max_record_size: "2 MiB"\nblocks:\n  stores:\n    default: {type: filesystem, block_size: 64KiB}\n',
    );
    assert.equal(c.cache.max_dirty_bytes, 2 ** 30);
    assert.equal(c.cache.read_cache_bytes, 2 ** 20);
    assert.equal(c.adapters.nfs.max_record_size, 2 * 2 ** 20);
    assert.equal(c.blocks.stores.default?.block_size, 64 * 1024);
  });

  it('reads root_mode as octal however it is written in the file', () => {
    const c = parse(
      'shares:\n  - {name: /a, root_mode: 0755}\n  - {name: /b, root_mode: 755}\n  - {name: /c, root_mode: 0o755}\n  - {name: /d, root_mode: "0755"}\n  - {name: /e, root_mode: \'750\'}\n  - {name: /f, root_mode: 0x1ed}\n  - {name: /g, root_mode: 1777}\n',
    );
    assert.deepEqual(
      c.shares.map((s) => s.root_mode),
      [0o755, 0o755, 0o755, 0o755, 0o750, 0o755, 0o1777],
    );
  });

  it('takes a numeric root_mode in an object at its value', () => {
    const c = validateConfig({
      shares: [
        { name: '/a', root_mode: 0o700 },
        { name: '/b', root_mode: '0700' },
      ],
    });
    assert.equal(c.shares[0]?.root_mode, 0o700);
    assert.equal(c.shares[1]?.root_mode, 0o700);
  });

  it('supports anchors and << merge keys', () => {
    const c = parse('shares:\n  - &base {name: /a, read_only: true, root_squash: true}\n  - <<: *base\n    name: /b\n');
    assert.deepEqual(
      c.shares.map((s) => [s.name, s.read_only, s.root_squash]),
      [
        ['/a', true, true],
        ['/b', true, true],
      ],
    );
  });

  it('accepts IPv6 and host names as bind addresses', () => {
    const c = parse('adapters:\n  nfs: {bind: "::"}\n  smb: {bind: localhost}\nmetrics: {bind: "::1"}\nserver: {api: {bind: 10.1.2.3}}\n');
    assert.deepEqual([c.adapters.nfs.bind, c.adapters.smb.bind, c.metrics.bind, c.server.api.bind], ['::', 'localhost', '::1', '10.1.2.3']);
  });
});

describe('the sample config', () => {
  it('validates and configures exactly the built-in defaults', () => {
    assert.deepEqual(parse(SAMPLE_CONFIG_YAML), expectedDefaults());
  });

  it('is checked in as config/dittofs.example.yaml', async () => {
    const onDisk = await readFile(path.join(REPO_ROOT, 'config', 'dittofs.example.yaml'), 'utf8');
    assert.equal(
      onDisk,
      SAMPLE_CONFIG_YAML,
      'config/dittofs.example.yaml differs from server/src/config/sample.ts; regenerate it with: ' +
        'node --import tsx server/src/cli/dittofs.ts config init --force --config config/dittofs.example.yaml',
    );
  });

  it('refuses its commented example jwt_secret, and a key of few different characters, once uncommented', () => {
    const line = SAMPLE_CONFIG_YAML.split('\n').find((l) => l.includes('# jwt_secret:'));
    assert.ok(line);
    const uncommented = SAMPLE_CONFIG_YAML.replace(line, line.replace('# jwt_secret', 'jwt_secret'));
    assertIssue(
      yamlIssues(uncommented),
      'server.api.jwt_secret',
      /it is the example value of the sample configuration .*openssl rand -base64 48$/,
    );
    assertIssue(yamlIssues('', { DITTOFS_JWT_SECRET: 'ab'.repeat(20) }), 'DITTOFS_JWT_SECRET', /fewer than 10 different characters/);
    for (const issue of yamlIssues(uncommented)) assert.doesNotMatch(issue.message, /change-me/, 'the value is not quoted');
  });

  it('comments every key', () => {
    // Each key line, sections included, has a comment line right above it.
    const lines = SAMPLE_CONFIG_YAML.split('\n');
    const keyRe = /^\s*(?:- )?([a-z_]+):/;
    let keys = 0;
    for (const [i, line] of lines.entries()) {
      if (!keyRe.test(line)) continue;
      keys++;
      assert.match(lines[i - 1] ?? '', /^\s*#/, `sample line ${i + 1} has no comment above it: ${line}`);
    }
    assert.ok(keys > 40, `only ${keys} keys`);
  });
});

describe('environment overrides', () => {
  const cases: [string, string, (c: DittoConfig) => unknown, unknown][] = [
    ['DITTOFS_DATA_DIR', '/d', (c) => c.data_dir, '/d'],
    ['DITTOFS_NFS_PORT', '2049', (c) => c.adapters.nfs.port, 2049],
    ['DITTOFS_SMB_PORT', '445', (c) => c.adapters.smb.port, 445],
    ['DITTOFS_API_PORT', '18080', (c) => c.server.api.port, 18080],
    ['DITTOFS_METRICS_PORT', '19090', (c) => c.metrics.port, 19090],
    ['DITTOFS_LOG_LEVEL', 'DEBUG', (c) => c.logging.level, 'debug'],
    ['DITTOFS_LOG_FILE', '/var/log/dittofs.log', (c) => c.logging.file, '/var/log/dittofs.log'],
    ['DITTOFS_NFS_ENABLED', 'false', (c) => c.adapters.nfs.enabled, false],
    ['DITTOFS_SMB_ENABLED', '0', (c) => c.adapters.smb.enabled, false],
    ['DITTOFS_SMB_SIGNING_REQUIRED', 'true', (c) => c.adapters.smb.signing_required, true],
    ['DITTOFS_SMB_ENCRYPTION_REQUIRED', 'true', (c) => c.adapters.smb.encryption_required, true],
    ['DITTOFS_SMB_OPLOCK_BREAK_TIMEOUT', '2s', (c) => c.adapters.smb.oplock_break_timeout, 2000],
    ['DITTOFS_SMB_DURABLE_HANDLE_TIMEOUT', '90s', (c) => c.adapters.smb.durable_handle_timeout, 90_000],
    ['DITTOFS_API_ENABLED', 'no', (c) => c.server.api.enabled, false],
    ['DITTOFS_METRICS_ENABLED', 'OFF', (c) => c.metrics.enabled, false],
    ['DITTOFS_PORTMAPPER_ENABLED', 'yes', (c) => c.adapters.nfs.portmapper.enabled, true],
    ['DITTOFS_PORTMAPPER_PORT', '111', (c) => c.adapters.nfs.portmapper.port, 111],
    ['DITTOFS_WAL_DIR', '/wal', (c) => c.cache.wal_dir, '/wal'],
    ['DITTOFS_WAL_MAX_BYTES', '8GiB', (c) => c.cache.wal_max_bytes, 8 * 2 ** 30],
    ['DITTOFS_MAX_DIRTY_BYTES', '1GiB', (c) => c.cache.max_dirty_bytes, 2 ** 30],
    ['DITTOFS_READ_CACHE_BYTES', '1000000', (c) => c.cache.read_cache_bytes, 1_000_000],
    ['DITTOFS_DISK_CACHE_DIR', '/cache', (c) => c.cache.disk_cache_dir, '/cache'],
    ['DITTOFS_DISK_CACHE_BYTES', '0', (c) => c.cache.disk_cache_bytes, 0],
    ['DITTOFS_JWT_SECRET', 'k9Xq2-Lm7Zp4'.repeat(4), (c) => c.server.api.jwt_secret, 'k9Xq2-Lm7Zp4'.repeat(4)],
    ['DITTOFS_DATABASE_URL', 'postgres://u:p@db:5432/ditto', (c) => c.database.url, 'postgres://u:p@db:5432/ditto'],
    ['DITTOFS_DATABASE__TYPE', 'postgres', (c) => c.database.type, 'postgres'],
    ['DITTOFS_ADAPTERS__NFS__DRC_SIZE', '4096', (c) => c.adapters.nfs.drc_size, 4096],
    ['DITTOFS_ADAPTERS__NFS__MAX_RECORD_SIZE', '2MiB', (c) => c.adapters.nfs.max_record_size, 2 * MiB],
    ['DITTOFS_ADAPTERS__NFS__MAX_CONNECTIONS', '50', (c) => c.adapters.nfs.max_connections, 50],
    ['DITTOFS_ADAPTERS__NFS__IDLE_TIMEOUT', '5s', (c) => c.adapters.nfs.idle_timeout, 5000],
    ['DITTOFS_ADAPTERS__NFS__MAX_BUFFERED_REQUEST_BYTES', '64MiB', (c) => c.adapters.nfs.max_buffered_request_bytes, 64 * MiB],
    ['DITTOFS_LOGGING__LEVEL', 'warn', (c) => c.logging.level, 'warn'],
    ['DITTOFS_ADAPTERS__NFS__PORTMAPPER__PORT', '1111', (c) => c.adapters.nfs.portmapper.port, 1111],
    ['DITTOFS_BLOCKS__STORES__DEFAULT__BLOCK_SIZE', '8MiB', (c) => c.blocks.stores.default?.block_size, 8 * MiB],
    ['DITTOFS_BLOCKS__STORES__DEFAULT__PATH', '/blk', (c) => c.blocks.stores.default?.path, '/blk'],
    ['DITTOFS_SHARES__0__READ_ONLY', 'true', (c) => c.shares[0]?.read_only, true],
    ['DITTOFS_SHARES__0__ROOT_MODE', '0750', (c) => c.shares[0]?.root_mode, 0o750],
    ['DITTOFS_SHARES__0__NAME', '/data', (c) => c.shares[0]?.name, '/data'],
  ];
  for (const [name, value, get, want] of cases) {
    it(`${name}=${value}`, () => {
      const c = parse('', { [name]: value });
      assert.deepEqual(get(c), want);
      // Nothing else changed... except what the variable is documented to change.
      assert.notDeepEqual(c, expectedDefaults());
    });
  }

  it('every named variable is tested above', () => {
    const tested = new Set(cases.map((c) => c[0]));
    for (const name of Object.keys(NAMED_ENV_OVERRIDES)) {
      if (name !== 'DITTOFS_BIND_ADDRESS') assert.ok(tested.has(name), name);
    }
  });

  it('override values in the file', () => {
    const c = parse('adapters:\n  nfs:\n    port: 2049\n', { DITTOFS_NFS_PORT: '3049' });
    assert.equal(c.adapters.nfs.port, 3049);
  });

  it('DITTOFS_BIND_ADDRESS sets every listener; the generic form wins for one', () => {
    const c = parse('', { DITTOFS_BIND_ADDRESS: '127.0.0.1', DITTOFS_ADAPTERS__SMB__BIND: '::1' });
    assert.deepEqual(
      [c.adapters.nfs.bind, c.adapters.smb.bind, c.server.api.bind, c.metrics.bind],
      ['127.0.0.1', '::1', '127.0.0.1', '127.0.0.1'],
    );
  });

  it('addresses named stores by upper-cased name, with other characters as _', () => {
    const c = parse('metadata: {stores: {m: {type: memory}}}\nblocks: {stores: {fast-ssd: {type: filesystem}}}\n', {
      DITTOFS_BLOCKS__STORES__FAST_SSD__BLOCK_SIZE: '1MiB',
    });
    assert.equal(c.blocks.stores['fast-ssd']?.block_size, MiB);
  });

  it('ignores empty values, non-override variables and Kubernetes service links', () => {
    const c = parse('', {
      DITTOFS_NFS_PORT: '',
      DITTOFS_NOT_A_THING: '',
      DITTOFS_CONFIG: '/some/file.yaml',
      DITTOFS_ADMIN_INITIAL_PASSWORD: 'secret',
      DITTOFS_TEST_PG_URL: 'postgres://x',
      DITTOFS_FUZZ_SEED: '12345', // a fuzz test's replay seed, inherited by the servers it starts
      DITTOFS_K8S_CACHE: '/tmp/k8s-cache',
      DITTOFS_SERVICE_HOST: '10.0.0.1',
      DITTOFS_SERVICE_PORT: '12049',
      DITTOFS_SERVICE_PORT_NFS: '12049',
      DITTOFS_PORT: 'tcp://10.0.0.1:12049',
      DITTOFS_PORT_12049_TCP: 'tcp://10.0.0.1:12049',
      DITTOFS_PORT_12049_TCP_ADDR: '10.0.0.1',
      DITTOFS_SMB_PORT: 'tcp://10.0.0.2:12445',
      OTHER_VAR: 'x',
    });
    assert.deepEqual(c, expectedDefaults());
  });

  it('reports bad values naming the variable and the key', () => {
    const issues = yamlIssues('', {
      DITTOFS_NFS_PORT: 'abc',
      DITTOFS_SMB_PORT: '70000',
      DITTOFS_SMB_ENABLED: 'maybe',
      DITTOFS_LOG_LEVEL: 'loud',
      DITTOFS_MAX_DIRTY_BYTES: 'lots',
      DITTOFS_BIND_ADDRESS: 'not an address',
      DITTOFS_ADAPTERS__NFS__DRC_SIZE: '0',
    });
    assertIssue(issues, 'DITTOFS_NFS_PORT', 'expected a port number from 1 to 65535, got "abc" (sets adapters.nfs.port)');
    assertIssue(issues, 'DITTOFS_SMB_PORT', 'expected a port number from 1 to 65535, got 70000 (sets adapters.smb.port)');
    assertIssue(issues, 'DITTOFS_SMB_ENABLED', /^expected true or false .*got "maybe" \(sets adapters\.smb\.enabled\)$/);
    assertIssue(issues, 'DITTOFS_LOG_LEVEL', /^expected one of trace, debug, info, warn, error, fatal, got "loud"/);
    assertIssue(issues, 'DITTOFS_MAX_DIRTY_BYTES', /^expected a size .*"lots" \(sets cache\.max_dirty_bytes\)$/);
    assertIssue(
      issues,
      'DITTOFS_BIND_ADDRESS',
      /expected an IP address .* \(sets adapters\.nfs\.bind, adapters\.smb\.bind, server\.api\.bind, metrics\.bind\)$/,
    );
    assertIssue(issues, 'DITTOFS_ADAPTERS__NFS__DRC_SIZE', /expected an integer from 1 to 1000000, got 0/);
    assert.equal(issues.length, 7);
  });

  it('reports variables that match no setting, with a suggestion', () => {
    const issues = yamlIssues('', {
      DITTOFS_NFS_PROT: '1',
      DITTOFS_ADAPTERS__NFS__DRC: '1',
      DITTOFS_ADAPTERS__NFS: '1',
      DITTOFS_ADAPTERS__NFS__PORT__X: '1',
      DITTOFS_SHARES__5__READ_ONLY: 'true',
      DITTOFS_BLOCKS__STORES__NOPE__PATH: '/x',
      DITTOFS_XYZZY_PLUGH: '1',
    });
    assertIssue(issues, 'DITTOFS_NFS_PROT', /^unknown environment override .*did you mean DITTOFS_NFS_PORT\?$/);
    assertIssue(issues, 'DITTOFS_ADAPTERS__NFS__DRC', /under adapters\.nfs.*did you mean DITTOFS_ADAPTERS__NFS__DRC_SIZE\?$/);
    assertIssue(issues, 'DITTOFS_ADAPTERS__NFS', /^adapters\.nfs is a section, not a single setting/);
    assertIssue(issues, 'DITTOFS_ADAPTERS__NFS__PORT__X', /^unknown environment override/);
    assertIssue(issues, 'DITTOFS_SHARES__5__READ_ONLY', /^shares entries are addressed by index from 0 to 0, got "5"$/);
    assertIssue(issues, 'DITTOFS_BLOCKS__STORES__NOPE__PATH', /^there is no block store named like "NOPE" .*defined: default/);
    assertIssue(issues, 'DITTOFS_XYZZY_PLUGH', /^unknown environment override \(no such setting\)$/);
    assert.equal(issues.length, 7);
  });

  it('validateConfig ignores the environment', () => {
    const prev = process.env.DITTOFS_NFS_PORT;
    process.env.DITTOFS_NFS_PORT = '1234';
    try {
      assert.equal(validateConfig({}).adapters.nfs.port, 12049);
    } finally {
      if (prev === undefined) delete process.env.DITTOFS_NFS_PORT;
      else process.env.DITTOFS_NFS_PORT = prev;
    }
  });
});

describe('validation errors', () => {
  it('rejects unknown keys with the full path and a suggestion', () => {
    const issues = yamlIssues(
      'adapters:\n  nfs:\n    prot: 2049\nlogging:\n  levle: info\nshares:\n  - name: /a\n    readonly: true\nzzz: 1\n',
    );
    assertIssue(issues, 'adapters.nfs.prot', 'unknown key (did you mean "port"?)');
    assertIssue(issues, 'logging.levle', 'unknown key (did you mean "level"?)');
    assertIssue(issues, 'shares[0].readonly', 'unknown key (did you mean "read_only"?)');
    assertIssue(
      issues,
      'zzz',
      /^unknown key \(expected one of: data_dir, logging, adapters, server, database, coordination, metrics, tracing, cache, metadata, blocks, shares\)$/,
    );
    assert.equal(issues.length, 4);
  });

  it('rejects wrong types', () => {
    const issues = yamlIssues(
      'data_dir: 5\nadapters:\n  nfs:\n    port: "2049"\n    enabled: yes\n  smb: 5\nmetrics: [1]\ncache:\n  max_dirty_bytes: true\nshares: {name: /a}\n',
    );
    assertIssue(issues, 'data_dir', 'expected a string, got the number 5');
    assertIssue(issues, 'adapters.nfs.port', 'expected a port number from 1 to 65535, got the string "2049"');
    assertIssue(issues, 'adapters.nfs.enabled', 'expected true or false, got the string "yes"');
    assertIssue(issues, 'adapters.smb', 'expected a mapping of keys, got the number 5');
    assertIssue(issues, 'metrics', 'expected a mapping of keys, got a list');
    assertIssue(issues, 'cache.max_dirty_bytes', /^expected a size .* got true$/);
    assertIssue(issues, 'shares', 'expected a list, got a mapping');
  });

  it('rejects ports outside 1..65535 and non-integers', () => {
    const issues = yamlIssues(
      'adapters:\n  nfs:\n    port: 0\n    portmapper: {port: 65536}\n  smb:\n    port: 1.5\nmetrics:\n  port: -1\n',
    );
    assertIssue(issues, 'adapters.nfs.port', 'expected a port number from 1 to 65535, got 0');
    assertIssue(issues, 'adapters.nfs.portmapper.port', 'expected a port number from 1 to 65535, got 65536');
    assertIssue(issues, 'adapters.smb.port', 'expected a port number from 1 to 65535, got the number 1.5');
    assertIssue(issues, 'metrics.port', 'expected a port number from 1 to 65535, got -1');
  });

  it('rejects values outside enums', () => {
    const issues = yamlIssues(
      'logging:\n  level: warning\n  format: pretty\nmetadata:\n  stores:\n    m: {type: postgress}\nblocks:\n  stores:\n    b: {type: s4}\nshares: []\n',
    );
    assertIssue(issues, 'logging.level', 'expected one of trace, debug, info, warn, error, fatal, got "warning" (did you mean "warn"?)');
    assertIssue(issues, 'logging.format', 'expected "json", got "pretty"');
    assertIssue(issues, 'metadata.stores.m.type', 'expected one of memory, embedded, postgres, got "postgress" (did you mean "postgres"?)');
    assertIssue(issues, 'blocks.stores.b.type', 'expected one of memory, filesystem, s3, got "s4" (did you mean "s3"?)');
  });

  it('checks share names', () => {
    const long = `/${'x'.repeat(255)}`;
    const issues = yamlIssues(
      `shares:\n  - name: export\n  - name: /a/\n  - name: /a/../b\n  - name: /\n  - name: /a//b\n  - name: ${long}\n  - name: /ok\n  - name: /ok\n  - read_only: true\n  - name: /ünïcödé\n`,
    );
    assertIssue(issues, 'shares[0].name', 'must start with "/" (such as "/export"), got "export"');
    assertIssue(issues, 'shares[1].name', 'must not end with "/", got "/a/"');
    assertIssue(issues, 'shares[2].name', 'must not contain "..", got "/a/../b"');
    assertIssue(issues, 'shares[3].name', 'must name a directory below "/", such as "/export"');
    assertIssue(issues, 'shares[4].name', 'must not contain "//", got "/a//b"');
    assertIssue(issues, 'shares[5].name', 'must be at most 255 bytes long, got 256');
    assertIssue(issues, 'shares[7].name', 'duplicate share "/ok" (also shares[6])');
    assertIssue(issues, 'shares[8].name', 'required key is missing');
    assert.equal(issues.length, 8);
  });

  it('counts share name length in UTF-8 bytes', () => {
    assert.doesNotThrow(() => parse(`shares:\n  - name: /${'é'.repeat(127)}\n`)); // 1 + 254 bytes
    assertIssue(yamlIssues(`shares:\n  - name: /${'é'.repeat(128)}\n`), 'shares[0].name', 'must be at most 255 bytes long, got 257');
  });

  it('requires stores named by shares to exist', () => {
    const issues = yamlIssues(
      'metadata: {stores: {m: {type: memory}}}\nblocks: {stores: {b: {type: memory}}}\nshares:\n  - {name: /a, metadata: m, blocks: nope}\n  - {name: /b, blocks: b}\n',
    );
    assertIssue(issues, 'shares[0].blocks', 'no block store named "nope" under blocks.stores (defined: b)');
    assertIssue(issues, 'shares[1].metadata', 'no metadata store named "default" under metadata.stores (defined: m)');
    assert.equal(issues.length, 2);
  });

  it('checks block sizes', () => {
    const issues = yamlIssues(
      'metadata: {stores: {m: {type: memory}}}\nblocks:\n  stores:\n    a: {type: memory, block_size: 3MiB}\n    b: {type: memory, block_size: 32KiB}\n    c: {type: memory, block_size: 128MiB}\n    d: {type: memory, block_size: 64MiB}\n    e: {type: memory, block_size: 65536}\n',
    );
    assertIssue(issues, 'blocks.stores.a.block_size', 'must be a power of two (such as 1MiB or 4MiB), got 3145728');
    assertIssue(issues, 'blocks.stores.b.block_size', 'must be at least 64KiB, got 32KiB');
    assertIssue(issues, 'blocks.stores.c.block_size', 'must be at most 64MiB, got 128MiB');
    assert.equal(issues.length, 3);
  });

  it('checks sizes and counts', () => {
    const issues = yamlIssues(
      'cache:\n  max_dirty_bytes: 0\n  read_cache_bytes: 12 parsecs\nadapters:\n  nfs:\n    max_record_size: 1KiB\n    drc_size: 2.5\n',
    );
    assertIssue(issues, 'cache.max_dirty_bytes', 'must be at least 1B, got 0B');
    assertIssue(issues, 'cache.read_cache_bytes', /^unknown size unit "parsecs"/);
    assertIssue(issues, 'adapters.nfs.max_record_size', 'must be at least 8KiB, got 1KiB');
    assertIssue(issues, 'adapters.nfs.drc_size', 'expected an integer from 1 to 1000000, got the number 2.5');
  });

  it('checks modes, ids and bind addresses', () => {
    const issues = yamlIssues(
      'shares:\n  - {name: /a, root_mode: 0799}\n  - {name: /b, root_mode: 493}\n  - {name: /c, root_mode: 17777, anonymous_uid: -1, root_gid: 4294967295}\nmetrics: {bind: "bad host!"}\n',
    );
    assertIssue(issues, 'shares[0].root_mode', 'expected a mode in octal such as "0755" or "0777" (at most 07777), got "0799"');
    assertIssue(issues, 'shares[1].root_mode', /got "493"$/);
    assertIssue(issues, 'shares[2].root_mode', /got "17777"$/);
    assertIssue(issues, 'shares[2].anonymous_uid', 'expected a numeric id from 0 to 4294967294, got -1');
    assertIssue(issues, 'shares[2].root_gid', 'expected a numeric id from 0 to 4294967294, got 4294967295');
    assertIssue(issues, 'metrics.bind', /^expected an IP address .* got "bad host!"$/);
    assert.equal(issues.length, 6);
  });

  it('rejects a key with no value, saying how to get the default', () => {
    assertIssue(
      yamlIssues('adapters:\n  nfs:\n    port:\n'),
      'adapters.nfs.port',
      'has no value (remove the key to use the default, 12049)',
    );
  });

  it('checks store names and store options', () => {
    const issues = yamlIssues(
      'metadata:\n  stores:\n    "bad name": {type: memory}\n    ok: {}\nblocks:\n  stores:\n    m: {type: memory, path: /x}\nshares: []\n',
    );
    assertIssue(issues, 'metadata.stores["bad name"]', /^invalid metadata store name/);
    assertIssue(issues, 'metadata.stores.ok.type', 'required key is missing');
    assertIssue(issues, 'blocks.stores.m.path', "only filesystem block stores have a path (this store's type is memory)");
    assert.equal(issues.length, 3);
  });

  it('rejects a request budget smaller than one record, and a negative idle timeout', () => {
    const issues = yamlIssues('adapters:\n  nfs: {max_record_size: 2MiB, max_buffered_request_bytes: 1MiB, idle_timeout: -1}\n');
    assertIssue(issues, 'adapters.nfs.max_buffered_request_bytes', 'must be at least adapters.nfs.max_record_size (2MiB), got 1MiB');
    assertIssue(issues, 'adapters.nfs.idle_timeout', /^expected a duration/);
    assert.equal(issues.length, 2);
    assert.equal(parse('adapters:\n  nfs: {idle_timeout: 0}\n').adapters.nfs.idle_timeout, 0, '0: never');
  });

  it('rejects two enabled listeners on the same port', () => {
    const issues = yamlIssues('adapters:\n  smb: {port: 12049}\n  nfs:\n    portmapper: {enabled: true, port: 9090}\n');
    assertIssue(issues, 'adapters.smb.port', 'port 12049 is also used by adapters.nfs.port');
    assertIssue(issues, 'metrics.port', 'port 9090 is also used by adapters.nfs.portmapper.port');
    assert.equal(issues.length, 2);
    // Disabled listeners and distinct specific addresses do not clash.
    assert.doesNotThrow(() => parse('adapters:\n  smb: {enabled: false, port: 12049}\n'));
    assert.doesNotThrow(() =>
      parse(
        'adapters:\n  nfs: {bind: 127.0.0.1}\n  smb: {port: 12049, bind: 127.0.0.2}\nserver: {api: {bind: 127.0.0.1}}\nmetrics: {bind: 127.0.0.1}\n',
      ),
    );
  });

  it('collects every problem, attaches file lines, and lists them in the message', () => {
    let err: unknown;
    try {
      parse('adapters:\n  nfs:\n    prot: 1\nlogging:\n  level: loud\n', { DITTOFS_SMB_PORT: 'x' });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError);
    assert.ok(err instanceof Error);
    assert.equal(err.name, 'ConfigError');
    assert.equal(err.source, 'test.yaml');
    assert.deepEqual(
      err.issues.map((i) => [i.path, i.line]),
      [
        ['DITTOFS_SMB_PORT', undefined],
        ['logging.level', 5],
        ['adapters.nfs.prot', 3],
      ],
    );
    const lines = err.message.split('\n');
    assert.equal(lines[0], 'invalid configuration (test.yaml), 3 problems:');
    assert.equal(lines[3], '  adapters.nfs.prot: unknown key (did you mean "port"?) (line 3)');
    assert.match(lines[2] ?? '', /^ {2}logging\.level: expected one of .* \(line 5\)$/);
  });

  it('validateConfig reports without lines', () => {
    const issues = issuesOf(() => validateConfig({ adapters: { nfs: { port: 0 } } }));
    assert.deepEqual(issues, [{ path: 'adapters.nfs.port', message: 'expected a port number from 1 to 65535, got 0' }]);
  });

  it('rejects a document that is not a mapping', () => {
    assert.deepEqual(yamlIssues('- a\n- b\n'), [{ path: '(top level)', message: 'expected a mapping of settings, got a list' }]);
    assert.deepEqual(yamlIssues('hello\n'), [{ path: '(top level)', message: 'expected a mapping of settings, got the string "hello"' }]);
    // A file that is not YAML (a binary, read as one long scalar) is quoted by its start only.
    const [issue] = yamlIssues(`${'x'.repeat(5000)}\n`);
    assert.equal(issue?.message, `expected a mapping of settings, got the string "${'x'.repeat(60)}"... (5000 characters)`);
  });
});

describe('REST API connection caps and trusted proxies', () => {
  const api = (body: string): string => `server:\n  api:\n${body.replace(/^/gm, '    ')}\n`;

  it('sets the caps and the proxies, from the file and from the environment', () => {
    const c = parse(
      api('max_connections: 50\nmax_connections_per_address: 0\ntrust_proxy: [10.0.0.0/8, "fd00::/64", 192.0.2.7, loopback]'),
    );
    assert.equal(c.server.api.max_connections, 50);
    assert.equal(c.server.api.max_connections_per_address, 0, '0: no per-address cap');
    assert.deepEqual(c.server.api.trust_proxy, ['10.0.0.0/8', 'fd00::/64', '192.0.2.7', 'loopback']);
    assert.equal(parse(api('trust_proxy: true')).server.api.trust_proxy, true);
    assert.equal(parse(api('trust_proxy: []')).server.api.trust_proxy, false, 'an empty list trusts nobody');
    assert.deepEqual(parse(api('trust_proxy: " 10.0.0.1 , ::1"')).server.api.trust_proxy, ['10.0.0.1', '::1'], 'a comma-separated string');
    const env = parse('', {
      DITTOFS_SERVER__API__MAX_CONNECTIONS_PER_ADDRESS: '32',
      DITTOFS_SERVER__API__TRUST_PROXY: '10.0.0.0/8,127.0.0.1',
    });
    assert.equal(env.server.api.max_connections_per_address, 32);
    assert.deepEqual(env.server.api.trust_proxy, ['10.0.0.0/8', '127.0.0.1']);
    assert.equal(parse('', { DITTOFS_SERVER__API__TRUST_PROXY: 'yes' }).server.api.trust_proxy, true);
    assert.equal(parse('', { DITTOFS_SERVER__API__TRUST_PROXY: 'false' }).server.api.trust_proxy, false);
  });

  it('refuses negative, zero, fractional and mistyped caps, and unknown keys, naming the key', () => {
    const issues = yamlIssues(api('max_connections: 0\nmax_connections_per_address: -1\nmax_conections: 5'));
    assertIssue(issues, 'server.api.max_connections', 'expected an integer from 1 to 1000000, got 0');
    assertIssue(issues, 'server.api.max_connections_per_address', 'expected an integer from 0 to 1000000, got -1');
    assertIssue(issues, 'server.api.max_conections', /unknown key \(did you mean "max_connections"\?\)/);
    assertIssue(yamlIssues(api('max_connections: 1.5')), 'server.api.max_connections', /got the number 1\.5$/);
    assertIssue(yamlIssues(api('max_connections_per_address: lots')), 'server.api.max_connections_per_address', /got the string "lots"$/);
    assertIssue(
      yamlIssues('', { DITTOFS_SERVER__API__MAX_CONNECTIONS: '-3' }),
      'DITTOFS_SERVER__API__MAX_CONNECTIONS',
      'expected an integer from 1 to 1000000, got -3 (sets server.api.max_connections)',
    );
  });

  it('refuses a trust_proxy that is not an address list, saying which entry is wrong', () => {
    const at = 'server.api.trust_proxy';
    assertIssue(
      yamlIssues(api('trust_proxy: [10.0.0.0/8, proxy.example.com]')),
      at,
      /^"proxy\.example\.com" is not an IP address, a CIDR range/,
    );
    assertIssue(yamlIssues(api('trust_proxy: 10.1.2.3/8')), at, '"10.1.2.3/8" has bits set past its prefix: the range is 10.0.0.0/8');
    assertIssue(yamlIssues(api('trust_proxy: 10.0.0.0/33')), at, '"10.0.0.0/33": the prefix length must be 0 to 32');
    assertIssue(yamlIssues(api('trust_proxy: "127.1"')), at, /^"127\.1" is not an IP address/);
    assertIssue(yamlIssues(api('trust_proxy: [10.0.0.1, 7]')), at, /; entry 1 is the number 7$/);
    assertIssue(yamlIssues(api('trust_proxy: [10.0.0.1, ""]')), at, /; entry 1 is empty$/);
    assertIssue(yamlIssues(api('trust_proxy: 1')), at, /^expected true, false, or a list .*, got the number 1$/);
    assertIssue(yamlIssues(api('trust_proxy: {a: 1}')), at, /, got a mapping$/);
    assertIssue(
      yamlIssues('', { DITTOFS_SERVER__API__TRUST_PROXY: 'maybe' }),
      'DITTOFS_SERVER__API__TRUST_PROXY',
      /^"maybe" is not an IP address.*\(sets server\.api\.trust_proxy\)$/,
    );
  });
});

describe('metadata stores', () => {
  const PW = 'Sup3r-s3cret';
  const URL_PW = `postgres://ditto:${PW}@db.example.com:5432/dittofs`;
  /** A file with the given metadata stores (flow-style YAML for each) and no shares. */
  const stores = (entries: Record<string, string>): string =>
    `metadata:\n  stores:\n${Object.entries(entries)
      .map(([name, v]) => `    ${name}: ${v}\n`)
      .join('')}shares: []\n`;
  const noPassword = (issues: ConfigIssue[]): void => {
    for (const i of issues) assert.ok(!`${i.path} ${i.message}`.includes(PW.slice(0, 6)), `password leaked: ${i.path}: ${i.message}`);
  };

  it('accepts embedded and postgres stores with all their keys', () => {
    const c = parse(
      stores({
        m: '{type: memory}',
        e: '{type: embedded, path: /var/lib/ditto/meta}',
        p: `{type: postgres, url: "${URL_PW}", pool_size: 20, schema: ditto_a, connect_timeout: 2500, statement_timeout: 60000}`,
        q: '{type: postgres, url: "postgresql:///dittofs?host=/var/run/postgresql"}',
      }),
    );
    assert.deepEqual(c.metadata.stores, {
      m: { type: 'memory' },
      e: { type: 'embedded', path: '/var/lib/ditto/meta' },
      p: { type: 'postgres', url: URL_PW, pool_size: 20, schema: 'ditto_a', connect_timeout: 2500, statement_timeout: 60000 },
      q: { type: 'postgres', url: 'postgresql:///dittofs?host=/var/run/postgresql' },
    });
  });

  it('sync is a key of postgres stores and embedded sqlite ones only', () => {
    const c = parse(stores({ p: `{type: postgres, url: "${URL_PW}", sync: change}`, e: '{type: embedded, path: /e, sync: change}' }));
    assert.equal(c.metadata.stores.p?.sync, 'change');
    assert.equal(c.metadata.stores.e?.sync, 'change');
    assertIssue(
      yamlIssues(stores({ m: '{type: memory, sync: commit}' })),
      'metadata.stores.m.sync',
      /^only postgres metadata stores and embedded ones on the sqlite engine have sync/,
    );
    assertIssue(yamlIssues(stores({ g: '{type: embedded, engine: pglite, sync: commit}' })), 'metadata.stores.g.sync', /engine pglite/);
    assertIssue(yamlIssues(stores({ p: `{type: postgres, url: "${URL_PW}", sync: never}` })), 'metadata.stores.p.sync', /commit/);
  });

  it('the built-in default metadata store is embedded, under data_dir (also when set from the environment)', () => {
    assert.deepEqual(parse('').metadata.stores, { default: { type: 'embedded', path: path.join(CWD, 'data', 'metadata', 'default') } });
    assert.deepEqual(parse('', { DITTOFS_DATA_DIR: '/mnt/x' }).metadata.stores, {
      default: { type: 'embedded', path: '/mnt/x/metadata/default' },
    });
  });

  it('an embedded store without path is placed under data_dir by name, after env overrides', () => {
    const yaml = stores({ 'meta.one': '{type: embedded}' });
    assert.equal(parse(yaml).metadata.stores['meta.one']?.path, path.join(CWD, 'data', 'metadata', 'meta.one'));
    assert.equal(parse(`data_dir: /var/lib/ditto\n${yaml}`).metadata.stores['meta.one']?.path, '/var/lib/ditto/metadata/meta.one');
    assert.equal(parse(yaml, { DITTOFS_DATA_DIR: '/mnt/x' }).metadata.stores['meta.one']?.path, '/mnt/x/metadata/meta.one');
    assert.equal(parse(yaml, { DITTOFS_METADATA__STORES__META_ONE__PATH: 'rel' }).metadata.stores['meta.one']?.path, path.join(CWD, 'rel'));
  });

  it('an embedded path resolves like block store paths: relative to cwd, ~/ to home, absolute kept', () => {
    const c = parse(
      stores({ a: '{type: embedded, path: ../meta}', b: '{type: embedded, path: ~/meta}', c: '{type: embedded, path: /abs}' }),
    );
    assert.equal(c.metadata.stores.a?.path, '/srv/meta');
    assert.equal(c.metadata.stores.b?.path, path.join(os.homedir(), 'meta'));
    assert.equal(c.metadata.stores.c?.path, '/abs');
    assertIssue(yamlIssues(stores({ a: '{type: embedded, path: ""}' })), 'metadata.stores.a.path', 'must not be empty');
  });

  it('accepts timeouts as numbers, digit strings and with units', () => {
    const c = parse(
      stores({
        p: `{type: postgres, url: "${URL_PW}", connect_timeout: "1.5s", statement_timeout: 2m}`,
        q: `{type: postgres, url: "${URL_PW}", connect_timeout: "750", statement_timeout: 1h}`,
        r: `{type: postgres, url: "${URL_PW}", connect_timeout: 1, statement_timeout: 250ms}`,
      }),
    );
    assert.deepEqual(
      ['p', 'q', 'r'].map((n) => [c.metadata.stores[n]?.connect_timeout, c.metadata.stores[n]?.statement_timeout]),
      [
        [1500, 120_000],
        [750, 3_600_000],
        [1, 250],
      ],
    );
  });

  it('checks url, pool_size, schema and timeouts', () => {
    const issues = yamlIssues(
      stores({
        a: `{type: postgres, url: "mysql://ditto:${PW}@db/x"}`,
        b: `{type: postgres, url: "ditto:${PW}@db:5432/x"}`,
        c: `{type: postgres, url: "postgres://ditto:${PW}/x@db:5432/x"}`,
        d: '{type: postgres, url: ""}',
        e: `{type: postgres, url: "${URL_PW}", pool_size: 0, schema: "Ditto", connect_timeout: 0, statement_timeout: 3600001}`,
        f: `{type: postgres, url: "${URL_PW}", pool_size: 1001, schema: pg_ditto, connect_timeout: 1.5, statement_timeout: 5 minutes}`,
        g: `{type: postgres, url: 5, pool_size: "10", schema: 1abc, connect_timeout: -5, statement_timeout: true}`,
        h: `{type: postgres, url: " ${URL_PW}", schema: "${'a'.repeat(64)}"}`,
      }),
    );
    const EXPECTED = 'expected a postgres:// or postgresql:// URL such as postgres://user@host:5432/dittofs';
    const DURATION = 'expected a duration in milliseconds from 1 to 3600000 (a number, or with a unit: 500ms, 5s, 2m, 1h)';
    const SCHEMA = 'expected a schema name of 1 to 63 lower-case letters, digits or "_", not starting with a digit';
    assertIssue(issues, 'metadata.stores.a.url', `${EXPECTED}, got a URL starting with "mysql://"`);
    assertIssue(issues, 'metadata.stores.b.url', `${EXPECTED}, got a string that does not start with postgres:// or postgresql://`);
    assertIssue(
      issues,
      'metadata.stores.c.url',
      `${EXPECTED}, got a string that does not parse as a URL (value not shown, as it may hold a password; ` +
        'percent-encode special characters in the user name and password, such as "/" as %2F and "@" as %40)',
    );
    assertIssue(issues, 'metadata.stores.d.url', `must not be empty (${EXPECTED})`);
    assertIssue(issues, 'metadata.stores.e.pool_size', 'expected an integer from 1 to 1000, got 0');
    assertIssue(issues, 'metadata.stores.e.schema', `${SCHEMA}, got "Ditto"`);
    assertIssue(issues, 'metadata.stores.e.connect_timeout', `${DURATION}, got 0`);
    assertIssue(issues, 'metadata.stores.e.statement_timeout', `${DURATION}, got 3600001`);
    assertIssue(issues, 'metadata.stores.f.pool_size', 'expected an integer from 1 to 1000, got 1001');
    assertIssue(
      issues,
      'metadata.stores.f.schema',
      'must not start with "pg_" (reserved by PostgreSQL for system schemas), got "pg_ditto"',
    );
    assertIssue(issues, 'metadata.stores.f.connect_timeout', 'must be a whole number of milliseconds, got the number 1.5');
    assertIssue(issues, 'metadata.stores.f.statement_timeout', `${DURATION}, got "5 minutes"`);
    assertIssue(issues, 'metadata.stores.g.url', 'expected a string, got the number 5');
    assertIssue(issues, 'metadata.stores.g.pool_size', 'expected an integer from 1 to 1000, got the string "10"');
    assertIssue(issues, 'metadata.stores.g.schema', `${SCHEMA}, got "1abc"`);
    assertIssue(issues, 'metadata.stores.g.connect_timeout', `${DURATION}, got -5`);
    assertIssue(issues, 'metadata.stores.g.statement_timeout', `${DURATION}, got true`);
    assertIssue(issues, 'metadata.stores.h.url', `must not start or end with white space (${EXPECTED})`);
    assertIssue(issues, 'metadata.stores.h.schema', `${SCHEMA}, got "${'a'.repeat(64)}"`);
    assert.equal(issues.length, 19);
    noPassword(issues);
  });

  it('allows each key only for its store type', () => {
    const issues = yamlIssues(
      stores({
        m: `{type: memory, path: /x, url: "${URL_PW}", pool_size: 5, schema: s, connect_timeout: 1, statement_timeout: 1}`,
        e: `{type: embedded, url: "${URL_PW}", schema: s}`,
        p: '{type: postgres, path: /x, pool_size: 5}',
        'my-pg': '{type: postgres}',
      }),
    );
    assertIssue(issues, 'metadata.stores.m.path', "only embedded metadata stores have a path (this store's type is memory)");
    assertIssue(issues, 'metadata.stores.m.url', "only postgres metadata stores have a url (this store's type is memory)");
    assertIssue(issues, 'metadata.stores.m.pool_size', "only postgres metadata stores have pool_size (this store's type is memory)");
    assertIssue(issues, 'metadata.stores.m.schema', "only postgres metadata stores have schema (this store's type is memory)");
    assertIssue(
      issues,
      'metadata.stores.m.connect_timeout',
      "only postgres metadata stores have connect_timeout (this store's type is memory)",
    );
    assertIssue(
      issues,
      'metadata.stores.m.statement_timeout',
      "only postgres metadata stores have statement_timeout (this store's type is memory)",
    );
    assertIssue(issues, 'metadata.stores.e.url', "only postgres metadata stores have a url (this store's type is embedded)");
    assertIssue(issues, 'metadata.stores.e.schema', "only postgres metadata stores have schema (this store's type is embedded)");
    assertIssue(issues, 'metadata.stores.p.path', "only embedded metadata stores have a path (this store's type is postgres)");
    assertIssue(
      issues,
      'metadata.stores.p.url',
      'required for postgres metadata stores: a postgres:// or postgresql:// URL (in the file or from DITTOFS_METADATA__STORES__P__URL)',
    );
    assertIssue(
      issues,
      'metadata.stores.my-pg.url',
      'required for postgres metadata stores: a postgres:// or postgresql:// URL (in the file or from DITTOFS_METADATA__STORES__MY_PG__URL)',
    );
    assert.equal(issues.length, 11);
    noPassword(issues);
    // A store whose type is invalid gets only the type error.
    const bad = yamlIssues(stores({ x: `{type: postgre, url: "${URL_PW}", path: /x}` }));
    assert.deepEqual(
      bad.map((i) => i.path),
      ['metadata.stores.x.type'],
    );
  });

  it('the url of a store in the file can come from the environment', () => {
    const c = parse(stores({ pg: '{type: postgres, schema: ditto}' }), { DITTOFS_METADATA__STORES__PG__URL: URL_PW });
    assert.equal(c.metadata.stores.pg?.url, URL_PW);
    // ...and overrides one in the file.
    const d = parse(stores({ pg: '{type: postgres, url: "postgres://old@h/db"}' }), { DITTOFS_METADATA__STORES__PG__URL: URL_PW });
    assert.equal(d.metadata.stores.pg?.url, URL_PW);
    const e = parse(stores({ pg: `{type: postgres, url: "${URL_PW}"}` }), {
      DITTOFS_METADATA__STORES__PG__POOL_SIZE: '50',
      DITTOFS_METADATA__STORES__PG__STATEMENT_TIMEOUT: '10s',
    });
    assert.deepEqual([e.metadata.stores.pg?.pool_size, e.metadata.stores.pg?.statement_timeout], [50, 10_000]);
  });

  it('a url override for a store not in the file is a clear error; a bad one does not echo the password', () => {
    const issues = yamlIssues('', { DITTOFS_METADATA__STORES__PG__URL: URL_PW });
    assert.deepEqual(issues, [
      {
        path: 'DITTOFS_METADATA__STORES__PG__URL',
        message:
          'there is no metadata store named like "PG" under metadata.stores (defined: default); ' +
          'environment variables set keys of stores defined in the config file, they cannot add a store',
      },
    ]);
    const bad = yamlIssues(stores({ pg: '{type: postgres}' }), { DITTOFS_METADATA__STORES__PG__URL: `http://ditto:${PW}@db/x` });
    assertIssue(
      bad,
      'DITTOFS_METADATA__STORES__PG__URL',
      'expected a postgres:// or postgresql:// URL such as postgres://user@host:5432/dittofs, got a URL starting with "http://" (sets metadata.stores.pg.url)',
    );
    assert.equal(bad.length, 1); // no "required" on top
    noPassword(bad);
  });

  it('error messages never show a password, even when a url is written where it does not belong', () => {
    let err: unknown;
    try {
      parse(`metadata:\n  stores:\n    pg: "${URL_PW}"\n    q: {type: "${URL_PW}"}\nshares: []\n`);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError);
    assert.ok(!err.message.includes(PW), err.message);
    assertIssue(
      [...err.issues],
      'metadata.stores.pg',
      'expected a mapping of keys, got the string "postgres://ditto:****@db.example.com:5432/dittofs"',
    );
    assertIssue(
      [...err.issues],
      'metadata.stores.q.type',
      /got "postgres:\/\/ditto:\*\*\*\*@db\.example\.com:5432\/dittofs" \(did you mean "postgres"\?\)$/,
    );
  });

  it('config show masks passwords and the output loads back', () => {
    const c = parse(
      stores({
        p: `{type: postgres, url: "${URL_PW}?sslmode=require&sslpassword=k3y"}`,
        q: '{type: postgres, url: "postgres://ditto@db/x"}',
        r: '{type: embedded}',
      }),
    );
    for (const format of ['yaml', 'json'] as const) {
      const text = formatConfig(c, format);
      assert.ok(!text.includes(PW) && !text.includes('k3y'), text);
      assert.ok(text.includes('postgres://ditto:****@db.example.com:5432/dittofs?sslmode=require&sslpassword=****'), text);
      assert.ok(text.includes('postgres://ditto@db/x'), text);
      const back = parse(text);
      assert.equal(back.metadata.stores.p?.url, 'postgres://ditto:****@db.example.com:5432/dittofs?sslmode=require&sslpassword=****');
      assert.equal(back.metadata.stores.r?.path, c.metadata.stores.r?.path);
    }
    // The config itself keeps the real URL.
    assert.equal(c.metadata.stores.p?.url, `${URL_PW}?sslmode=require&sslpassword=k3y`);
  });

  it('masking helpers', () => {
    assert.equal(maskUrlPassword('postgres://u:p%40ss@h:1/db'), 'postgres://u:****@h:1/db');
    assert.equal(maskUrlPassword('postgres://u:p@ss@h/db?x=a@b'), 'postgres://u:****@h/db?x=a@b');
    assert.equal(maskUrlPassword('postgres://u@h/db?password=pw&a=b'), 'postgres://u@h/db?password=****&a=b');
    assert.equal(maskUrlPassword('postgres://h:5432/db'), 'postgres://h:5432/db');
    // The pg driver reads parameter names decoded: pass%77ord is password.
    assert.equal(maskUrlPassword('postgres://u@h/db?pass%77ord=pw&a=b'), 'postgres://u@h/db?pass%77ord=****&a=b');
    assert.equal(maskUrlPassword('postgres://u@h/db?a=1&ssl%50ASSWORD=pw'), 'postgres://u@h/db?a=1&ssl%50ASSWORD=****');
    assert.equal(maskUrlPassword('postgres://u@h/db?password%3D=pw'), 'postgres://u@h/db?password%3D=pw', 'a name that decodes to another');
    assert.equal(redactSecrets('at postgres://u@h/db?p%61ssword=pw (refused)'), 'at postgres://u@h/db?p%61ssword=**** (refused)');
    assert.equal(redactSecrets('got "postgres://u:pa/ss@h/db" here'), 'got "postgres://u:****@h/db" here');
    assert.equal(redactSecrets('no url here: a:b@c'), 'no url here: a:b@c');
    // In a query a "?" is a character: the pg driver's password here is "abc?def", masked whole.
    assert.equal(maskUrlPassword('postgres://u@h/db?password=abc?def'), 'postgres://u@h/db?password=****');
    assert.equal(
      maskUrlPassword('postgres://u@h/db?sslmode=require&password=s3?x=1&a=b'),
      'postgres://u@h/db?sslmode=require&password=****&a=b',
    );
    assert.equal(redactSecrets('at postgres://u@h/db?password=abc?def here'), 'at postgres://u@h/db?password=**** here');
    assert.equal(maskUrlPassword('postgres://u@h/db?a=1?password=x'), 'postgres://u@h/db?a=1?password=x', 'the value of a, not a password');
  });

  it("the sample's commented-out store examples validate when uncommented", () => {
    const uncommented = SAMPLE_CONFIG_YAML.split('\n')
      .map((l) => l.replace(/^( {4})# (?=[a-z0-9]+:$| {2})/, '$1'))
      .join('\n');
    assert.notEqual(uncommented, SAMPLE_CONFIG_YAML);
    const c = parse(uncommented);
    assert.deepEqual(c.metadata.stores, {
      default: { type: 'embedded', path: path.join(CWD, 'data', 'metadata', 'default') },
      scratch: { type: 'memory' },
      pg: {
        type: 'postgres',
        url: 'postgres://dittofs:PASSWORD@db.example.com:5432/dittofs',
        pool_size: 10,
        schema: 'dittofs',
        connect_timeout: 5000,
        statement_timeout: 30000,
        sync: 'change',
      },
    });
  });
});

describe('block stores', () => {
  const SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY';
  /** A file with the given block stores (flow-style YAML for each) and no shares. */
  const stores = (entries: Record<string, string>): string =>
    `blocks:\n  stores:\n${Object.entries(entries)
      .map(([name, v]) => `    ${name}: ${v}\n`)
      .join('')}shares: []\n`;
  const noSecret = (issues: ConfigIssue[]): void => {
    for (const i of issues) assert.ok(!`${i.path} ${i.message}`.includes(SECRET.slice(0, 8)), `secret leaked: ${i.path}: ${i.message}`);
  };

  it('accepts s3 stores with all their keys, and with the bucket alone', () => {
    const c = parse(
      stores({
        full:
          `{type: s3, bucket: dittofs-blocks, prefix: cluster-1, endpoint: "http://127.0.0.1:9000", region: eu-central-1, ` +
          `force_path_style: true, access_key_id: AKIAEXAMPLE, secret_access_key: "${SECRET}", request_timeout: 5s, max_attempts: 5, block_size: 8MiB}`,
        aws: '{type: s3, bucket: my.bucket-1}',
      }),
    );
    assert.deepEqual(c.blocks.stores, {
      full: {
        type: 's3',
        block_size: 8 * MiB,
        bucket: 'dittofs-blocks',
        prefix: 'cluster-1',
        endpoint: 'http://127.0.0.1:9000',
        region: 'eu-central-1',
        force_path_style: true,
        access_key_id: 'AKIAEXAMPLE',
        secret_access_key: SECRET,
        request_timeout: 5000,
        max_attempts: 5,
      },
      aws: { type: 's3', block_size: 4 * MiB, bucket: 'my.bucket-1' },
    });
  });

  it('requires a bucket for s3 stores, naming the environment variable that can set it', () => {
    const issues = yamlIssues(stores({ 'my-s3': '{type: s3}' }));
    assert.deepEqual(issues, [
      {
        path: 'blocks.stores.my-s3.bucket',
        message: 'required for s3 block stores: the name of an existing bucket (in the file or from DITTOFS_BLOCKS__STORES__MY_S3__BUCKET)',
      },
    ]);
    assert.equal(
      parse(stores({ 'my-s3': '{type: s3}' }), { DITTOFS_BLOCKS__STORES__MY_S3__BUCKET: 'from-env' }).blocks.stores['my-s3']?.bucket,
      'from-env',
    );
    // An invalid bucket is reported once, without "required" on top.
    const bad = yamlIssues(stores({ b: '{type: s3}' }), { DITTOFS_BLOCKS__STORES__B__BUCKET: 's3://x' });
    assert.equal(bad.length, 1);
    assertIssue(
      bad,
      'DITTOFS_BLOCKS__STORES__B__BUCKET',
      'expected the bucket name alone, without "s3://", got "s3://x" (sets blocks.stores.b.bucket)',
    );
  });

  it('allows each key only for its store type', () => {
    const issues = yamlIssues(
      stores({
        f: `{type: filesystem, bucket: bkt, endpoint: "http://h:1", secret_access_key: "${SECRET}", max_attempts: 2}`,
        m: '{type: memory, region: us-east-1, force_path_style: false, request_timeout: 100, prefix: p, access_key_id: AK}',
        s: '{type: s3, bucket: bkt, path: /x}',
      }),
    );
    const only = (store: string, key: string, type: string): void =>
      assertIssue(issues, `blocks.stores.${store}.${key}`, `only s3 block stores have ${key} (this store's type is ${type})`);
    only('f', 'bucket', 'filesystem');
    only('f', 'endpoint', 'filesystem');
    only('f', 'secret_access_key', 'filesystem');
    only('f', 'max_attempts', 'filesystem');
    only('m', 'region', 'memory');
    only('m', 'force_path_style', 'memory');
    only('m', 'request_timeout', 'memory');
    only('m', 'prefix', 'memory');
    only('m', 'access_key_id', 'memory');
    assertIssue(issues, 'blocks.stores.s.path', "only filesystem block stores have a path (this store's type is s3)");
    assert.equal(issues.length, 10);
    noSecret(issues);
  });

  it('checks endpoint, bucket, region, prefix, timeouts and attempts', () => {
    const issues = yamlIssues(
      stores({
        a: `{type: s3, bucket: "s3://blocks", endpoint: "ftp://h", region: "us east", max_attempts: 0, request_timeout: 0}`,
        b: `{type: s3, bucket: Bad_Bucket, endpoint: "http://AKIA:${SECRET}@minio:9000", max_attempts: 21, force_path_style: "yes"}`,
        c: `{type: s3, bucket: ab, endpoint: "minio:9000", prefix: "a\\tb", request_timeout: 2h}`,
        d: `{type: s3, bucket: "192.168.1.1", endpoint: "http://h:9000/?x=1"}`,
      }),
    );
    const BUCKET =
      /^expected a bucket name of 3 to 63 lower-case letters, digits, "\." or "-", starting and ending with a letter or digit, got /;
    assertIssue(issues, 'blocks.stores.a.bucket', 'expected the bucket name alone, without "s3://", got "s3://blocks"');
    assertIssue(issues, 'blocks.stores.a.endpoint', /^expected an http:\/\/ or https:\/\/ URL .*, got a URL starting with "ftp:\/\/"$/);
    assertIssue(issues, 'blocks.stores.a.region', 'expected a region such as us-east-1 or eu-central-1, got "us east"');
    assertIssue(issues, 'blocks.stores.a.max_attempts', 'expected an integer from 1 to 20, got 0');
    assertIssue(issues, 'blocks.stores.a.request_timeout', /^expected a duration in milliseconds from 1 to 3600000 .*, got 0$/);
    assertIssue(issues, 'blocks.stores.b.bucket', BUCKET);
    assertIssue(
      issues,
      'blocks.stores.b.endpoint',
      'must not hold a user name or password (value not shown); give them as access_key_id and secret_access_key',
    );
    assertIssue(issues, 'blocks.stores.b.max_attempts', 'expected an integer from 1 to 20, got 21');
    assertIssue(issues, 'blocks.stores.b.force_path_style', 'expected true or false, got the string "yes"');
    assertIssue(issues, 'blocks.stores.c.bucket', BUCKET);
    assertIssue(issues, 'blocks.stores.c.endpoint', /^expected an http:\/\/ or https:\/\/ URL .*, got "minio:9000"$/);
    assertIssue(issues, 'blocks.stores.c.prefix', 'must not contain control characters');
    assertIssue(issues, 'blocks.stores.c.request_timeout', /^expected a duration in milliseconds from 1 to 3600000 .*, got "2h"$/);
    assertIssue(issues, 'blocks.stores.d.bucket', BUCKET);
    assertIssue(issues, 'blocks.stores.d.endpoint', 'must not have a query or fragment, got "http://h:9000/?x=1"');
    assert.equal(issues.length, 15);
    noSecret(issues);
  });

  it('takes both credentials or neither', () => {
    const issues = yamlIssues(
      stores({ a: '{type: s3, bucket: bkt, access_key_id: AK}', b: `{type: s3, bucket: bkt, secret_access_key: "${SECRET}"}` }),
    );
    assertIssue(
      issues,
      'blocks.stores.a.secret_access_key',
      'required with access_key_id (in the file or from DITTOFS_BLOCKS__STORES__A__SECRET_ACCESS_KEY); or leave both out to use ' +
        'the standard AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, web identity, instance role)',
    );
    assertIssue(
      issues,
      'blocks.stores.b.access_key_id',
      /^required with secret_access_key \(in the file or from DITTOFS_BLOCKS__STORES__B__ACCESS_KEY_ID\)/,
    );
    assert.equal(issues.length, 2);
    noSecret(issues);
  });

  it('the secret can come from the environment; a bad one is reported without showing it', () => {
    const file = stores({ s3: '{type: s3, bucket: bkt, access_key_id: AK}' });
    const c = parse(file, { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: SECRET });
    assert.equal(c.blocks.stores.s3?.secret_access_key, SECRET);
    const bad = yamlIssues(file, { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: ` ${SECRET}` });
    assert.deepEqual(bad, [
      {
        path: 'DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY',
        message: 'must not start or end with white space (value not shown) (sets blocks.stores.s3.secret_access_key)',
      },
    ]);
  });

  it('error messages never show the secret, whatever is wrong with it', () => {
    let err: unknown;
    try {
      parse(
        stores({
          a: `{type: s3, bucket: bkt, access_key_id: AK, secret_access_key: ["${SECRET}"]}`,
          f: `{type: memory, secret_access_key: "${SECRET}"}`,
        }),
      );
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError);
    assert.ok(!err.message.includes(SECRET.slice(0, 8)), err.message);
    assertIssue([...err.issues], 'blocks.stores.a.secret_access_key', 'expected a string, got a list (value not shown)');
    assertIssue(
      [...err.issues],
      'blocks.stores.f.secret_access_key',
      "only s3 block stores have secret_access_key (this store's type is memory)",
    );
  });

  it('config show masks the secret and the output loads back', () => {
    const c = parse(
      stores({ s3: `{type: s3, bucket: bkt, access_key_id: AKIAEXAMPLE, secret_access_key: "${SECRET}"}`, fs: '{type: filesystem}' }),
    );
    for (const format of ['yaml', 'json'] as const) {
      const text = formatConfig(c, format);
      assert.ok(!text.includes(SECRET.slice(0, 8)), text);
      assert.ok(text.includes('AKIAEXAMPLE'), text);
      const back = parse(text);
      assert.equal(back.blocks.stores.s3?.secret_access_key, '****');
      assert.equal(back.blocks.stores.fs?.path, c.blocks.stores.fs?.path);
    }
    // The config itself keeps the real secret.
    assert.equal(c.blocks.stores.s3?.secret_access_key, SECRET);
  });

  it("the sample's commented-out s3 store validates when uncommented", () => {
    // Only the s3 store's lines: from "    # s3:" to the end of its indented block.
    const lines = SAMPLE_CONFIG_YAML.split('\n');
    const first = lines.indexOf('    # s3:');
    assert.ok(first > 0);
    let last = first + 1;
    while (lines[last]?.startsWith('    #   ')) last++;
    const uncommented = lines.map((l, i) => (i >= first && i < last ? l.replace(/^( {4})# /, '$1') : l)).join('\n');
    assert.deepEqual(parse(uncommented).blocks.stores.s3, {
      type: 's3',
      block_size: 4 * MiB,
      bucket: 'dittofs-blocks',
      prefix: 'cluster-1',
      endpoint: 'http://minio.example.com:9000',
      region: 'us-east-1',
      force_path_style: true,
      access_key_id: 'AKIAIOSFODNN7EXAMPLE',
      secret_access_key: 'SECRET',
      request_timeout: 30000,
      max_attempts: 3,
    });
  });
});

describe('YAML syntax errors', () => {
  it('are reported with line and column', () => {
    const issues = yamlIssues('adapters:\n  nfs:\n    port: [1\nmetrics: {}\n');
    assert.equal(issues.length, 1);
    assert.match(issues[0]?.path ?? '', /^test\.yaml:\d+:\d+$/);
    assert.match(issues[0]?.message ?? '', /^YAML syntax error: /);
  });

  it('report the exact position of a bad indent', () => {
    const issues = yamlIssues('logging:\n  level: info\n format: json\n');
    assert.match(issues[0]?.path ?? '', /^test\.yaml:3:\d+$/);
  });

  it('include duplicate keys and multiple documents', () => {
    const dup = yamlIssues('data_dir: a\ndata_dir: b\n');
    assert.deepEqual(dup, [{ path: 'test.yaml:2:1', message: 'YAML syntax error: Map keys must be unique' }]);
    assert.match(yamlIssues('data_dir: a\n---\ndata_dir: b\n')[0]?.message ?? '', /multiple documents/);
  });
});

describe('formatConfig', () => {
  it('yaml and json output load back to the same config', () => {
    const c = parse('shares:\n  - {name: /a, root_mode: "0750", read_only: true}\ncache: {max_dirty_bytes: 3MiB}\n');
    for (const format of ['yaml', 'json'] as const) {
      const text = formatConfig(c, format);
      assert.deepEqual(parse(text), c, format);
    }
    assert.match(formatConfig(c, 'yaml'), /root_mode: "0750"/);
    assert.equal((JSON.parse(formatConfig(c, 'json')) as { shares: { root_mode: string }[] }).shares[0]?.root_mode, '0750');
  });
});

describe('loadConfig', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-config-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('uses the built-in defaults when there is no file', async () => {
    const empty = path.join(dir, 'empty');
    await mkdir(empty);
    const r = await loadConfig({ env: {}, cwd: empty });
    assert.equal(r.source, BUILT_IN_SOURCE);
    assert.deepEqual(r.overrides, []);
    assert.equal(r.config.data_dir, path.join(empty, 'data'));
  });

  it('reads ./dittofs.yaml, then DITTOFS_CONFIG, then the file option', async () => {
    const cwd = path.join(dir, 'cwd');
    await mkdir(cwd);
    await writeFile(path.join(cwd, 'dittofs.yaml'), 'adapters: {nfs: {port: 1001}}\n');
    await writeFile(path.join(dir, 'env.yaml'), 'adapters: {nfs: {port: 1002}}\n');
    await writeFile(path.join(dir, 'opt.yaml'), 'adapters: {nfs: {port: 1003}}\n');

    let r = await loadConfig({ env: {}, cwd });
    assert.equal(r.source, path.join(cwd, 'dittofs.yaml'));
    assert.equal(r.config.adapters.nfs.port, 1001);

    r = await loadConfig({ env: { DITTOFS_CONFIG: '../env.yaml' }, cwd });
    assert.equal(r.source, path.join(dir, 'env.yaml'));
    assert.equal(r.config.adapters.nfs.port, 1002);

    r = await loadConfig({ file: path.join(dir, 'opt.yaml'), env: { DITTOFS_CONFIG: path.join(dir, 'env.yaml') }, cwd });
    assert.equal(r.source, path.join(dir, 'opt.yaml'));
    assert.equal(r.config.adapters.nfs.port, 1003);

    r = await loadConfig({ file: 'opt.yaml', env: { DITTOFS_NFS_PORT: '1004', DITTOFS_LOG_LEVEL: 'warn' }, cwd: dir });
    assert.equal(r.config.adapters.nfs.port, 1004);
    assert.deepEqual(r.overrides, ['DITTOFS_LOG_LEVEL', 'DITTOFS_NFS_PORT']);
  });

  it('fails clearly on a missing file or a directory', async () => {
    await assert.rejects(loadConfig({ file: path.join(dir, 'nope.yaml'), env: {} }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.issues, [{ path: path.join(dir, 'nope.yaml'), message: 'cannot read config file: file not found' }]);
      return true;
    });
    await assert.rejects(loadConfig({ env: { DITTOFS_CONFIG: dir } }), /is a directory, not a file/);
  });

  it('names the file in errors', async () => {
    const f = path.join(dir, 'bad.yaml');
    await writeFile(f, 'adapters:\n  nfs:\n    prot: 1\n');
    await assert.rejects(loadConfig({ file: f, env: {} }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.source, f);
      assert.match(
        err.message,
        new RegExp(
          `^invalid configuration \\(${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\), 1 problem:\n {2}adapters\\.nfs\\.prot: unknown key`,
        ),
      );
      return true;
    });
  });
});

describe('suggestions', () => {
  it('edit distance counts transpositions once', () => {
    assert.equal(editDistance('port', 'prot'), 1);
    assert.equal(editDistance('', 'abc'), 3);
    assert.equal(editDistance('kitten', 'sitting'), 3);
  });
  it('suggests close names only', () => {
    assert.equal(suggest('prot', ['port', 'bind', 'enabled']), 'port');
    assert.equal(suggest('Port', ['port', 'bind']), 'port');
    assert.equal(suggest('drc', ['drc_size', 'port']), 'drc_size');
    assert.equal(suggest('xyz', ['port', 'bind']), undefined);
  });
});

describe('config/examples', () => {
  const dir = path.join(REPO_ROOT, 'config', 'examples');
  // The secrets the examples say to set in the environment.
  const PG_URL = { DITTOFS_METADATA__STORES__PG__URL: 'postgres://dittofs:pw@db.internal:5432/dittofs' };
  const S3_SECRET = { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: 'not-a-real-secret' };
  const want: Record<string, { env: Record<string, string>; meta: string[]; blocks: string[]; shares: string[] }> = {
    'embedded-filesystem.yaml': { env: {}, meta: ['embedded'], blocks: ['filesystem'], shares: ['/export'] },
    'embedded-s3.yaml': { env: {}, meta: ['embedded'], blocks: ['s3'], shares: ['/export'] },
    'memory.yaml': { env: {}, meta: ['memory'], blocks: ['memory'], shares: ['/export'] },
    'postgres-filesystem-shares.yaml': {
      env: PG_URL,
      meta: ['postgres', 'memory'],
      blocks: ['filesystem', 'memory'],
      shares: ['/home', '/projects', '/scratch'],
    },
    'postgres-s3.yaml': { env: { ...PG_URL, ...S3_SECRET }, meta: ['postgres'], blocks: ['s3'], shares: ['/export'] },
  };

  it('holds exactly the documented combinations', async () => {
    const { readdir } = await import('node:fs/promises');
    assert.deepEqual((await readdir(dir)).sort(), Object.keys(want).sort());
  });

  for (const [file, w] of Object.entries(want)) {
    it(`${file} validates and configures what its name says`, async () => {
      const c = parseConfig(await readFile(path.join(dir, file), 'utf8'), w.env, file, { cwd: CWD });
      assert.deepEqual(
        Object.values(c.metadata.stores).map((s) => s.type),
        w.meta,
      );
      assert.deepEqual(
        Object.values(c.blocks.stores).map((s) => s.type),
        w.blocks,
      );
      assert.deepEqual(
        c.shares.map((s) => s.name),
        w.shares,
      );
    });
  }
});

describe('tracing', () => {
  it('is off by default, with a local collector as the endpoint', () => {
    assert.deepEqual(parse('').tracing, {
      enabled: false,
      endpoint: 'http://127.0.0.1:4318/v1/traces',
      service_name: 'dittofs',
      sample_ratio: 1,
    });
  });

  it('takes every key from the file and from the environment', () => {
    const c = parse(
      'tracing:\n  enabled: true\n  endpoint: https://otel.example.com/v1/traces\n  service_name: ditto-a\n  sample_ratio: 0.25\n',
    );
    assert.deepEqual(c.tracing, {
      enabled: true,
      endpoint: 'https://otel.example.com/v1/traces',
      service_name: 'ditto-a',
      sample_ratio: 0.25,
    });
    const e = parse('', {
      DITTOFS_TRACING__ENABLED: 'true',
      DITTOFS_TRACING__ENDPOINT: 'http://collector:4318/v1/traces',
      DITTOFS_TRACING__SAMPLE_RATIO: '.5',
    });
    assert.deepEqual([e.tracing.enabled, e.tracing.endpoint, e.tracing.sample_ratio], [true, 'http://collector:4318/v1/traces', 0.5]);
  });

  it('rejects a non-HTTP endpoint, a ratio outside 0..1 and a blank service name', () => {
    const issues = yamlIssues('tracing:\n  endpoint: grpc://collector:4317\n  sample_ratio: 1.5\n  service_name: "my service"\n');
    assertIssue(issues, 'tracing.endpoint', /^expected the http:\/\/ or https:\/\/ URL of an OTLP\/HTTP traces endpoint/);
    assertIssue(issues, 'tracing.sample_ratio', 'expected a number from 0 to 1 (such as 0.1 for one in ten), got the number 1.5');
    assertIssue(issues, 'tracing.service_name', /^expected a name of 1 to 255 printable characters without spaces/);
    assertIssue(
      issuesOf(() => parse('', { DITTOFS_TRACING__SAMPLE_RATIO: 'half' })),
      'DITTOFS_TRACING__SAMPLE_RATIO',
      /expected a number from 0 to 1/,
    );
  });
});

describe('coordination.redis', () => {
  it('is off by default (no url), with a dittofs: prefix and a 10 s lease', () => {
    assert.deepEqual(parse('').coordination, { redis: { key_prefix: 'dittofs:', tls: false, lease_ttl: 10_000 } });
  });

  it('takes every key from the file, the url from the environment, and resolves the password file', () => {
    const c = parse(
      'coordination:\n  redis:\n    url: rediss://redis.example.com:6380/2\n    key_prefix: "ns/a:"\n    tls: true\n' +
        '    password_file: secrets/redis\n    lease_ttl: 30s\n',
    );
    assert.deepEqual(c.coordination.redis, {
      url: 'rediss://redis.example.com:6380/2',
      key_prefix: 'ns/a:',
      tls: true,
      password_file: path.join(CWD, 'secrets', 'redis'),
      lease_ttl: 30_000,
    });
    const e = parse('', { DITTOFS_COORDINATION__REDIS__URL: 'redis://10.0.0.5:6379', DITTOFS_COORDINATION__REDIS__PASSWORD_ENV: 'RP' });
    assert.equal(e.coordination.redis.url, 'redis://10.0.0.5:6379');
    assert.equal(e.coordination.redis.password_env, 'RP');
  });

  it('refuses a password in the url without quoting it, other schemes, two password sources, a password without a url', () => {
    const withPassword = yamlIssues('coordination:\n  redis:\n    url: redis://:hunter2@redis:6379\n');
    assertIssue(
      withPassword,
      'coordination.redis.url',
      'must not hold a password (value not shown); give it as password_file or password_env',
    );
    assert.ok(!JSON.stringify(withPassword).includes('hunter2'));
    assertIssue(
      yamlIssues('coordination:\n  redis:\n    url: http://redis:6379\n'),
      'coordination.redis.url',
      /^expected a redis:\/\/ or rediss:\/\/ URL/,
    );
    assertIssue(yamlIssues('coordination:\n  redis:\n    url: redis://redis:6379/x\n'), 'coordination.redis.url', /database number/);
    assertIssue(
      yamlIssues('coordination:\n  redis:\n    url: redis://redis\n    password_file: /p\n    password_env: P\n'),
      'coordination.redis.password_env',
      'give the Redis password one way: password_file or password_env, not both',
    );
    assertIssue(
      yamlIssues('coordination:\n  redis:\n    password_env: P\n'),
      'coordination.redis.password_env',
      /needs coordination\.redis\.url/,
    );
    assertIssue(
      yamlIssues('coordination:\n  redis:\n    password_env: "1x"\n'),
      'coordination.redis.password_env',
      /environment variable name/,
    );
    assertIssue(
      yamlIssues('coordination:\n  redis:\n    key_prefix: "a b"\n'),
      'coordination.redis.key_prefix',
      /printable characters without spaces/,
    );
    assertIssue(yamlIssues('coordination:\n  redis:\n    lease_ttl: 10ms\n'), 'coordination.redis.lease_ttl', /./);
  });
});

describe("README.md's configuration table", () => {
  /** The rows of the table under `| Key | Default | Meaning |`: the keys each names, and its defaults. */
  async function readmeRows(): Promise<{ keys: string[]; defaults: (string | undefined)[]; line: string }[]> {
    const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const lines = readme.split('\n');
    const start = lines.findIndex((l) => l.startsWith('| Key | Default | Meaning |'));
    assert.ok(start >= 0, 'README.md has the configuration table');
    const rows: { keys: string[]; defaults: (string | undefined)[]; line: string }[] = [];
    for (const line of lines.slice(start + 2)) {
      if (!line.startsWith('|')) break;
      const [keyCell = '', defaultCell = ''] = line.split(' | ').map((c) => c.replace(/^\| /, '').trim());
      const names = keyCell.split(' / ').map((k) => /^`([^`]+)`$/.exec(k)?.[1]);
      const first = names[0];
      if (first === undefined || names.some((n) => n === undefined)) continue; // "API requests (fixed)"
      const parent = first.slice(0, Math.max(first.lastIndexOf('.'), 0));
      const keys = names.map((n, i) => (i === 0 ? first : `${parent}.${n!}`));
      // One default per key, or one for them all; a default that is not one `value` is prose.
      const parts = defaultCell.split(' / ').map((d) => /^`([^`<>]+)`$/.exec(d)?.[1]);
      const defaults = keys.map((_, i) => (parts.length === keys.length ? parts[i] : parts.length === 1 ? parts[0] : undefined));
      rows.push({ keys, defaults, line });
    }
    return rows;
  }

  /** Every key the file may hold: `metadata.stores.NAME.url`, `shares[].name`. */
  function schemaKeys(node: SchemaNode = SCHEMA, prefix = ''): string[] {
    const join = (k: string): string => (prefix === '' ? k : `${prefix}.${k}`);
    switch (node.kind) {
      case 'leaf':
        return [prefix];
      case 'object':
        return Object.entries<SchemaNode>(node.fields).flatMap(([k, child]) => schemaKeys(child, join(k)));
      case 'record':
        return schemaKeys(node.entry, join('NAME'));
      case 'array':
        return schemaKeys(node.element, `${prefix}[]`);
    }
  }

  /** A YAML document setting one key (stores as `default`, the share as the first) to a value as written. */
  function yamlSetting(key: string, value: string): string {
    const scalar = /:(\s|$)|#|^[*&!|>'"%@`{[]/.test(value) ? JSON.stringify(value) : value;
    const segs = key.replace('.NAME.', '.default.').split('.');
    if (segs[0] === 'shares[]') return `shares:\n  - name: ${segs[1] === 'name' ? scalar : `/export\n    ${segs[1]}: ${scalar}`}\n`;
    const store =
      segs[1] === 'stores' && segs[3] !== 'type' ? `${'  '.repeat(3)}type: ${segs[0] === 'metadata' ? 'embedded' : 'filesystem'}\n` : '';
    const last = segs.length - 1;
    return segs.map((s, i) => `${'  '.repeat(i)}${s}:${i === last ? ` ${scalar}` : ''}\n${i === 2 ? store : ''}`).join('');
  }

  function valueAt(c: DittoConfig, key: string): unknown {
    let v: unknown = c;
    for (const s of key.replace('.NAME.', '.default.').replace('shares[]', 'shares.0').split('.')) {
      v = (v as Record<string, unknown> | undefined)?.[s];
    }
    return v;
  }

  it('names every key of the file', async () => {
    const documented = new Set((await readmeRows()).flatMap((r) => r.keys));
    const missing = schemaKeys().filter((k) => !documented.has(k));
    assert.deepEqual(missing, [], 'keys of the config schema with no row in README.md');
    const unknown = [...documented].filter((k) => !schemaKeys().includes(k));
    assert.deepEqual(unknown, [], 'README.md rows naming keys the config schema does not have');
  });

  it('gives the defaults the server uses', async () => {
    const defaults = parse('');
    let checked = 0;
    for (const { keys, defaults: shown, line } of await readmeRows()) {
      for (const [i, key] of keys.entries()) {
        const text = shown[i];
        const want = valueAt(defaults, key);
        // A default the config leaves to the code (a postgres store's pool_size) is not checkable here.
        if (text === undefined || want === undefined) continue;
        const yaml = yamlSetting(key, text);
        let got: unknown;
        try {
          got = valueAt(parse(yaml), key);
        } catch (err) {
          assert.fail(`${key}: README.md's default ${text} is refused: ${(err as Error).message}\n${line}`);
        }
        assert.deepEqual(got, want, `${key}: README.md says ${text}\n${line}\n${yaml}`);
        checked++;
      }
    }
    assert.ok(checked >= 50, `only ${checked} defaults checked`);
  });

  it('lists every named environment variable, as does the sample config', async () => {
    const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const named = /named variables\n?([\s\S]*?), and for any key/.exec(readme)?.[1];
    assert.ok(named, 'README.md lists the named variables');
    const sample = /Named ones: ([\s\S]*?)\. Any single setting/.exec(SAMPLE_CONFIG_YAML)?.[1];
    assert.ok(sample, 'the sample lists the named variables');
    const vars = (text: string): string[] => [...text.matchAll(/DITTOFS_[A-Z_]+/g)].map((m) => m[0]).sort();
    assert.deepEqual(vars(named), Object.keys(NAMED_ENV_OVERRIDES).sort(), 'README.md');
    assert.deepEqual(vars(sample), Object.keys(NAMED_ENV_OVERRIDES).sort(), 'sample.ts');
  });
});
