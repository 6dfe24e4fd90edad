// The DittoFS CRDs (crds/) on a real kube-apiserver: they install and become Established,
// `kubectl get` shows their printer columns, valid objects are accepted with their defaults, and
// invalid ones are refused by the schema and its CEL rules with a message that names the field.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { REPO_ROOT } from '../helpers/server.js';
import { K8S_WAIT, startKubeControlPlane, type KubeControlPlane } from '../helpers/k8s.js';
import { COMMAND_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let cp: KubeControlPlane;
const ns = `dittofs-crds-${randomBytes(3).toString('hex')}`;

function kubectl(args: string[], input = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cp.kubectl, ['--kubeconfig', cp.kubeconfig, ...args], { env: cp.env, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const t = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

async function ok(args: string[], input = ''): Promise<string> {
  const r = await kubectl(args, input);
  assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function refused(yaml: string, message: RegExp): Promise<void> {
  const r = await kubectl(['apply', '-n', ns, '-f', '-'], yaml);
  assert.notEqual(r.code, 0, `accepted:\n${yaml}`);
  assert.match(r.stderr, message);
}

const dittofs = (name: string, spec: string): string => `apiVersion: dittofs.io/v1alpha1
kind: DittoFS
metadata:
  name: ${name}
spec:
${spec}`;

describe('DittoFS CRDs on a real kube-apiserver', { timeout: SUITE_TIMEOUT_MS }, () => {
  before(async () => {
    cp = await startKubeControlPlane();
    await ok(['create', 'namespace', ns]);
  });

  after(async () => {
    if (cp?.external) {
      await kubectl(['delete', 'namespace', ns, '--wait=false']);
      await kubectl(['delete', '-f', path.join(REPO_ROOT, 'crds'), '--ignore-not-found']);
    }
    await cp?.stop();
  });

  it('install and become Established', async () => {
    await ok(['apply', '-f', path.join(REPO_ROOT, 'crds')]);
    for (const crd of ['dittofses', 'stores', 'shares', 'users']) {
      await ok(['wait', '--for=condition=Established', `--timeout=${K8S_WAIT}`, `crd/${crd}.dittofs.io`]);
    }
    const names = await ok(['api-resources', '--api-group=dittofs.io', '-o', 'name']);
    assert.deepEqual(names.trim().split('\n').sort(), [
      'dittofses.dittofs.io',
      'shares.dittofs.io',
      'stores.dittofs.io',
      'users.dittofs.io',
    ]);
  });

  it('kubectl get dittofs shows the printer columns; defaults are applied; the short name works', async () => {
    await ok(['apply', '-n', ns, '-f', '-'], dittofs('main', '  image: dittofs/server:0.1.0\n  cache:\n    size: 20Gi\n'));
    const out = await ok(['get', 'dfs', '-n', ns]);
    assert.match(out.split('\n')[0]!, /^NAME\s+READY\s+REPLICAS\s+PHASE\s+AGE$/);
    assert.match(out, /^main\s/m);
    const obj = JSON.parse(await ok(['get', 'dittofs', 'main', '-n', ns, '-o', 'json'])) as {
      spec: { replicas: number; adapters?: unknown; database?: { type: string }; logLevel: string };
    };
    assert.equal(obj.spec.replicas, 1);
    assert.equal(obj.spec.logLevel, 'info');
  });

  it('a Share shows its server, path and Synced; Store and User are accepted', async () => {
    await ok(
      ['apply', '-n', ns, '-f', '-'],
      `apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: bucket }
spec: { dittofs: main, kind: block, type: s3, config: { bucket: my-bucket, region: eu-west-1 }, secretRefs: { secret_access_key: { name: s3, key: secret } } }
---
apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: archive }
spec: { dittofs: main, path: /archive, metadataStore: default, blockStore: bucket, permissions: [{ user: alice, level: read-write }] }
---
apiVersion: dittofs.io/v1alpha1
kind: User
metadata: { name: alice }
spec: { dittofs: main, username: alice, uid: 1000, passwordSecretRef: { name: alice, key: password } }
`,
    );
    const out = await ok(['get', 'shares.dittofs.io', '-n', ns]);
    assert.match(out.split('\n')[0]!, /^NAME\s+SERVER\s+PATH\s+SYNCED\s+AGE$/);
    assert.match(out, /^archive\s+main\s+\/archive\s/m);
    assert.match(await ok(['get', 'users.dittofs.io', '-n', ns]), /^alice\s+main\s+alice\s+1000\s/m);
  });

  it('invalid objects are refused with a message naming the field', async () => {
    await refused(dittofs('bad1', '  replicas: 99\n'), /spec\.replicas.*(less than or equal to 16|should be less than or equal)/);
    await refused(dittofs('bad2', '  logLevel: loud\n'), /spec\.logLevel.*Unsupported value: "loud"/);
    await refused(dittofs('bad3', '  database:\n    type: postgres\n'), /database\.postgres is required when database\.type is postgres/);
    await refused(
      dittofs('bad4', '  adapters:\n    nfs: { port: 2049 }\n    smb: { port: 2049 }\n'),
      /adapters\.nfs\.port and adapters\.smb\.port must differ/,
    );
    await refused(
      `apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: wrong }
spec: { dittofs: main, kind: metadata, type: s3 }
`,
      /type must be memory, embedded or postgres for kind metadata/,
    );
    await refused(
      `apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: wrong }
spec: { dittofs: main, path: "/a/../b", metadataStore: m, blockStore: b }
`,
      /spec\.path/,
    );
    await refused(
      `apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: wrong2 }
spec: { dittofs: main, path: /x, metadataStore: m, blockStore: b, permissions: [{ user: a, group: b, level: read }] }
`,
      /a permission names exactly one of user or group/,
    );
  });

  it('replicas > 1 needs a PostgreSQL database and a Redis (several servers on one store lose data without both)', async () => {
    const rule = /replicas > 1 requires database\.type postgres and coordination\.redis/;
    const pg = '  database: { type: postgres, postgres: { urlSecretRef: { name: pg, key: url } } }\n';
    const redis = '  coordination: { redis: { urlSecretRef: { name: redis, key: url }, keyPrefix: "dfs/", tls: { enabled: true } } }\n';
    await refused(dittofs('many1', '  replicas: 3\n'), rule);
    await refused(dittofs('many2', `  replicas: 3\n${pg}`), rule);
    await refused(dittofs('many3', `  replicas: 3\n${redis}`), rule);
    // Accepted with both (the operator runs that many pods: test/k8s/operator.test.ts).
    await ok(['apply', '-n', ns, '-f', '-'], dittofs('many', `  replicas: 3\n${pg}${redis}`));
    await refused(dittofs('many', `  replicas: 3\n${pg}`), rule);
    // Scaling goes through the same rule.
    await ok(['apply', '-n', ns, '-f', '-'], dittofs('one', '  replicas: 1\n'));
    const scaled = await kubectl(['scale', 'dittofs', 'one', '-n', ns, '--replicas=2']);
    assert.notEqual(scaled.code, 0, 'kubectl scale to 2 without PostgreSQL and Redis was accepted');
    assert.match(scaled.stderr, rule);
    await refused(
      dittofs('redis1', `${redis.replace('urlSecretRef: { name: redis, key: url }, ', '')}`),
      /spec\.coordination\.redis\.urlSecretRef: Required value/,
    );
  });

  it('CEL transition rules: the storage class, a share path and the owning DittoFS cannot change', async () => {
    await ok(['apply', '-n', ns, '-f', '-'], dittofs('sc', '  cache:\n    storageClassName: fast\n'));
    await refused(dittofs('sc', '  cache:\n    storageClassName: slow\n'), /cache\.storageClassName is immutable/);
    await refused(
      `apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: archive }
spec: { dittofs: main, path: /elsewhere, metadataStore: default, blockStore: bucket }
`,
      /spec\.path is immutable/,
    );
  });
});
