import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { FINALIZER, LABELS, MANAGED_BY, type DittoFS, type Store, type User } from '../../api/types.js';
import { DittofsApiClient } from '../../dittofs-api/client.js';
import { answerLogin, EMPTY_STATE, sendJson, startFakeServer, type FakeServer } from '../../dittofs-api/fake-server.testing.js';
import { EventRecorder } from '../../kube/events.js';
import { FakeKubeClient } from '../../kube/fake-client.testing.js';
import { redactingLogger, SecretValues } from '../../kube/redact.js';
import { paths } from '../../kube/resources.js';
import { createLogger, errorFields } from '../../log.js';
// The server's own check of an S3 endpoint: it quotes what it got (server/src/config/schema.ts).
import { s3EndpointProblem } from '../../../../server/src/config/schema.js';
import { stateReconciler } from './reconcile.js';

// A quote and a backslash: the server quotes the value as a JSON string, not as it is.
const PASSWORD = 'Adm1n"pass\\word-9f8e7d';
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

const dfs: DittoFS = { metadata: { name: 'main', namespace: 'ns', uid: 'dfs-uid' }, spec: {} };
/** A Store whose author may not read Secrets, naming the admin Secret as its S3 endpoint. */
const leak: Store = {
  metadata: { name: 'leak', namespace: 'ns', uid: 'store-uid', generation: 1, finalizers: ['dittofs.io/server-cleanup'] },
  spec: {
    dittofs: 'main',
    kind: 'block',
    type: 's3',
    config: { bucket: 'my-bucket' },
    secretRefs: { endpoint: { name: 'main-admin', key: 'password' } },
  },
};

function setup(server: FakeServer, opts: { owned?: boolean } = {}) {
  const kube = new FakeKubeClient();
  const owner = { apiVersion: 'dittofs.io/v1alpha1', kind: 'DittoFS', name: 'main', uid: 'dfs-uid', controller: true };
  const otherOwner = { apiVersion: 'v1', kind: 'ConfigMap', name: 'app', uid: 'cm-uid', controller: true };
  kube.put(paths.secrets('ns', 'main-admin'), {
    // Not owned: another object controls it (a Secret a user made, with no controller, is theirs to provide).
    metadata: { name: 'main-admin', namespace: 'ns', ownerReferences: [opts.owned === false ? otherOwner : owner] },
    data: { username: b64('admin'), password: b64(PASSWORD), 'initial-password': b64('initial-0123456789') },
  });
  kube.put(paths.custom('Store', 'ns', 'leak'), leak);
  const lines: string[] = [];
  const secrets = new SecretValues();
  // As the operator builds it (operator.ts): every line through the redactor.
  const log = redactingLogger(createLogger({ level: 'trace', write: (l) => lines.push(l) }), secrets);
  const reconcile = stateReconciler({
    client: kube.client,
    api: new DittofsApiClient({ log }),
    pods: { mode: 'annotation', readyPods: () => [{ name: 'main-0', url: server.url }] },
    cache: { dittofs: () => dfs, stores: () => [leak], shares: () => [], users: () => [] },
    log,
    events: new EventRecorder(kube.client, log, 'op-1', secrets),
    secrets,
  });
  // What the work queue's onError does with a failed reconcile (operator.ts).
  const run = async () => {
    try {
      return await reconcile('ns/main');
    } catch (e) {
      log.warn('reconcile failed; retrying', { queue: 'state', key: 'ns/main', ...errorFields(e, true) });
      return undefined;
    }
  };
  return { kube, lines, run };
}

/** Everything the operator wrote where others can read it. */
function written(kube: FakeKubeClient, lines: string[]): string {
  const patches = kube.calls.filter((c) => c.verb === 'mergePatch').map((c) => JSON.stringify(c.body));
  return [...patches, ...kube.events.map((e) => JSON.stringify(e)), ...lines].join('\n');
}

function assertNoPassword(text: string): void {
  for (const form of [PASSWORD, JSON.stringify(PASSWORD).slice(1, -1), b64(PASSWORD), 'Adm1n']) {
    assert.ok(!text.includes(form), `${JSON.stringify(form)} was written:\n${text}`);
  }
}

function syncedMessage(kube: FakeKubeClient): string {
  const st = kube.objects.get(paths.custom('Store', 'ns', 'leak')) as unknown as Store;
  return st.status?.conditions?.find((c) => c.type === 'Synced')?.message ?? '';
}

describe('state reconcile: Secret values never reach a status, an Event or a log line', () => {
  const servers: FakeServer[] = [];
  after(async () => Promise.all(servers.map((s) => s.close())));

  it('a Store naming the admin Secret as its S3 endpoint: the server refuses and quotes it, the Store says whose value it was', async () => {
    const server = await startFakeServer((req, res) => {
      if (req.path === '/api/v1/auth/login') return answerLogin(req, res, PASSWORD);
      if (req.method === 'GET') return sendJson(res, 200, EMPTY_STATE);
      const body = JSON.parse(req.body) as { block_stores: { name: string; config: { endpoint?: string } }[] };
      const bad = body.block_stores.find((s) => s.name === 'leak');
      if (bad !== undefined) {
        const detail = `block_stores["leak"].config.endpoint: ${s3EndpointProblem(bad.config.endpoint!)}`;
        return sendJson(
          res,
          400,
          { type: 'about:blank', title: 'Bad Request', status: 400, detail, item: 'block_stores["leak"]' },
          'application/problem+json',
        );
      }
      sendJson(res, 200, { generation: 2, created: [], updated: [], removed: [], unchanged: 0 });
    });
    servers.push(server);
    assert.ok(s3EndpointProblem(PASSWORD)!.includes(JSON.stringify(PASSWORD)), 'the server quotes the value');
    const { kube, lines, run } = setup(server);
    await run();
    const message = syncedMessage(kube);
    assert.match(message, /refused by main-0/);
    assert.ok(message.includes('<value of Secret main-admin key password>'), message);
    assert.ok(kube.events.length > 0, 'events were recorded');
    assertNoPassword(written(kube, lines));
  });

  it('a pod that fails quoting the value (500): the PushFailed status and the log line do not repeat it', async () => {
    const server = await startFakeServer((req, res) => {
      if (req.path === '/api/v1/auth/login') return answerLogin(req, res, PASSWORD);
      if (req.method === 'GET') return sendJson(res, 200, EMPTY_STATE);
      sendJson(
        res,
        500,
        { type: 'about:blank', title: 'Internal', status: 500, detail: `cannot reach ${JSON.stringify(PASSWORD)}` },
        'application/problem+json',
      );
    });
    servers.push(server);
    const { kube, lines, run } = setup(server);
    await run();
    assert.match(syncedMessage(kube), /PushFailed|main-0/);
    assert.ok(
      lines.some((l) => l.includes('reconcile failed')),
      'the failure was logged',
    );
    assertNoPassword(written(kube, lines));
  });

  it('an admin Secret that another object controls: its password is sent to no pod', async () => {
    const server = await startFakeServer((req, res) =>
      req.path === '/api/v1/auth/login' ? answerLogin(req, res, PASSWORD) : sendJson(res, 200, EMPTY_STATE),
    );
    servers.push(server);
    const { kube, run } = setup(server, { owned: false });
    await run();
    assert.equal(server.requests.length, 0, 'no login, no push');
    assert.match(syncedMessage(kube), /not this DittoFS's/);
  });
});

describe('state reconcile: a deleted resource is dropped from the servers before its finalizer goes', () => {
  const servers: FakeServer[] = [];
  after(async () => Promise.all(servers.map((s) => s.close())));

  it('a User deleted while no pod is ready (a restart) keeps its finalizer until a ready pod was given the state without it', async () => {
    const pushed: { users: { username: string }[] }[] = [];
    const server = await startFakeServer((req, res) => {
      if (req.path === '/api/v1/auth/login') return answerLogin(req, res, PASSWORD);
      if (req.method === 'GET') return sendJson(res, 200, EMPTY_STATE);
      pushed.push(JSON.parse(req.body) as { users: { username: string }[] });
      sendJson(res, 200, { generation: 2, created: [], updated: [], removed: [], unchanged: 0 });
    });
    servers.push(server);
    const kube = new FakeKubeClient();
    kube.put(paths.secrets('ns', 'main-admin'), {
      metadata: { name: 'main-admin', namespace: 'ns', labels: { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: 'main' } },
      data: { username: b64('admin'), password: b64(PASSWORD), 'initial-password': b64('initial-0123456789') },
    });
    // The last member of its DittoFS, being deleted.
    const alice: User = {
      metadata: {
        name: 'alice',
        namespace: 'ns',
        uid: 'u1',
        generation: 1,
        finalizers: [FINALIZER],
        deletionTimestamp: '2026-12-06T21:00:00Z',
      },
      spec: { dittofs: 'main', username: 'alice' },
    };
    kube.put(paths.custom('User', 'ns', 'alice'), alice);
    let ready: { name: string; url: string }[] = [];
    const reconcile = stateReconciler({
      client: kube.client,
      api: new DittofsApiClient({ log: createLogger({ level: 'silent' }) }),
      pods: { mode: 'annotation', readyPods: () => ready },
      cache: { dittofs: () => dfs, stores: () => [], shares: () => [], users: () => [alice] },
      log: createLogger({ level: 'silent' }),
      secrets: new SecretValues(),
    });
    const finalizers = () => (kube.objects.get(paths.custom('User', 'ns', 'alice')) as unknown as User).metadata.finalizers ?? [];
    await reconcile('ns/main');
    assert.deepEqual(finalizers(), [FINALIZER], 'no server was told: the deletion waits');
    assert.equal(pushed.length, 0);
    // The pod is ready again (its readiness enqueues the DittoFS's sync).
    ready = [{ name: 'main-0', url: server.url }];
    await reconcile('ns/main');
    assert.equal(pushed.length, 1);
    assert.deepEqual(pushed[0]!.users, [], 'the state pushed is without alice');
    assert.deepEqual(finalizers(), [], 'then the finalizer goes');
  });
});
