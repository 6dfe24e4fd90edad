// The sync of one DittoFS's Stores, Shares and Users to its server pods. Keyed by the DittoFS
// (namespace/name): the server takes the whole desired state in one PUT, so every change to any of
// its resources is one more run of this, serialized and coalesced per DittoFS by the work queue.
//
// A run: add finalizers; read the Secrets the resources reference; compute the desired state
// (desired.ts); PUT it to every ready pod (the items of resources that cannot be applied are
// carried over from that pod's current state); if a pod refuses an item, mark the resource it
// stands for as refused and push again (bounded); write each resource's status; remove the
// finalizers of deleted resources no pod has any more (at least one ready pod told).
import { FINALIZER, splitKey, type DittoFS, type KindName, type SecretKeyRef, type Share, type Store, type User } from '../../api/types.js';
import { isNotFound, type KubeClient } from '../../kube/client.js';
import { lookupSecret, paths, secretValue, type SecretObject } from '../../kube/resources.js';
import { DittofsApiError, type AdminCredentials, type DittofsApiClient } from '../../dittofs-api/client.js';
import type { PodAddressResolver, PodEndpoint } from '../../dittofs-api/pods.js';
import type { Logger } from '../../log.js';
import type { ReconcileResult } from '../../runtime/workqueue.js';
import { ADMIN_SECRET_KEYS, ADMIN_USERNAME, childNames } from '../dittofs/names.js';
import { writeStatus } from '../dittofs/reconcile.js';
import { onceSecretClaim } from '../dittofs/ownership.js';
import type { EventRecorder } from '../../kube/events.js';
import type { Redactor, SecretValues } from '../../kube/redact.js';
import { isDeleting, memberKey, type Member, type SecretResolver } from '../member.js';
import { confirmApplied, podsBehind } from './converge.js';
import { computeDesiredState, memberOfItem, needsCurrentState, parseServerItem, withCarryOver, type StatePlan } from './desired.js';
import { memberStatus, type PodOutcome } from './status.js';
import { errorMessage } from '../../error-message.js';

export interface StateCache {
  dittofs(namespace: string, name: string): DittoFS | undefined;
  stores(namespace: string): Store[];
  shares(namespace: string): Share[];
  users(namespace: string): User[];
}

export interface StateReconcilerDeps {
  client: KubeClient;
  api: DittofsApiClient;
  pods: PodAddressResolver;
  cache: StateCache;
  log: Logger;
  /** Records an Event for each status change (kube/events.ts); none when absent. */
  events?: EventRecorder;
  /** Every Secret value read is remembered here; statuses are written through it (kube/redact.ts). */
  secrets: SecretValues;
}

/** Pushes per run at most: each retry isolates one more refused resource. */
const MAX_PUSH_ROUNDS = 6;
/** Resources waiting on something outside the cluster's events (a refused S3 bucket) are looked at again after this. */
const RECHECK_MS = 60_000;

/** A pod behind the newest generation is asked again after this (it applies within its poll). */
const CONVERGE_RECHECK_MS = 5_000;

export function stateReconciler(deps: StateReconcilerDeps): (key: string) => Promise<ReconcileResult> {
  const { client, cache } = deps;
  return async (key) => {
    const { namespace, name } = splitKey(key);
    const log = deps.log.child({ sync: key });
    const out: StatusOut = { client, redactor: deps.secrets.forNamespace(namespace), events: deps.events };
    const mine = <T extends { spec: { dittofs: string } }>(xs: T[]): T[] => xs.filter((x) => x.spec.dittofs === name);
    const stores = mine(cache.stores(namespace));
    const shares = mine(cache.shares(namespace));
    const users = mine(cache.users(namespace));
    const members: Member[] = [
      ...stores.map((obj) => ({ kind: 'Store' as const, obj })),
      ...shares.map((obj) => ({ kind: 'Share' as const, obj })),
      ...users.map((obj) => ({ kind: 'User' as const, obj })),
    ];
    if (members.length === 0) return {};

    // Finalizers first: from now on a deletion waits for us.
    for (const m of members) {
      if (isDeleting(m.obj) || (m.obj.metadata.finalizers ?? []).includes(FINALIZER)) continue;
      await setFinalizers(client, m, [...(m.obj.metadata.finalizers ?? []), FINALIZER]);
    }

    const dfs = cache.dittofs(namespace, name);
    if (dfs === undefined || isDeleting(dfs)) {
      // No server to clean up: deletions proceed, the others wait for their DittoFS.
      const blocked = {
        reason: 'DittoFSNotFound',
        message: dfs === undefined ? `DittoFS ${name} does not exist in namespace ${namespace}` : `DittoFS ${name} is being deleted`,
      };
      for (const m of members) {
        if (isDeleting(m.obj)) await removeFinalizer(client, m);
        else await writeMemberStatus(out, m, memberStatus({ ...statusBase(m, name), verdict: undefined, pods: [], blocked }));
      }
      return {};
    }

    const creds = await adminCredentials(client, dfs, deps.secrets);
    if (creds === undefined) {
      const blocked = {
        reason: 'AdminSecretMissing',
        message: `the admin Secret ${childNames(name).adminSecret} is missing, incomplete or not this DittoFS's; the DittoFS reconcile recreates a missing one`,
      };
      for (const m of members) {
        if (!isDeleting(m.obj))
          await writeMemberStatus(out, m, memberStatus({ ...statusBase(m, name), verdict: undefined, pods: [], blocked }));
      }
      return { requeueAfterMs: 5_000 };
    }

    const secret = await readSecrets(client, namespace, members, deps.secrets);
    const readyPods = deps.pods.readyPods(dfs);
    const refused = new Map<string, string>();
    let plan!: StatePlan;
    let outcomes: PushOutcome[] = [];
    for (let round = 0; round < MAX_PUSH_ROUNDS; round++) {
      plan = computeDesiredState({ stores, shares, users, secret, refused });
      outcomes = await Promise.all(readyPods.map((pod) => pushToPod(deps.api, pod, creds, plan)));
      let fresh = 0;
      for (const o of outcomes) {
        if (o.ok || o.refusedItem === undefined) continue;
        const item = parseServerItem(o.refusedItem);
        const member = item === undefined ? undefined : memberOfItem(plan, item);
        if (member !== undefined && !refused.has(member)) {
          refused.set(member, `refused by ${o.pod.name}: ${o.error}`);
          fresh++;
        }
      }
      if (fresh === 0) break;
      log.info('a server refused an item; pushing again without it', { refused: [...refused.keys()] });
    }

    // Every ready pod must run the newest generation any of them reported (converge.ts).
    outcomes = await confirmApplied(outcomes, (pod) => deps.api.appliedGeneration(pod.url, creds));
    const behind = podsBehind(outcomes);
    // A deleted resource's finalizer goes once a server dropped it: with no ready pod, none has
    // (a restart, a rollout), and the next run may have no member left to push for.
    const allOk = outcomes.length > 0 && outcomes.every((o) => o.ok) && behind.length === 0;
    const carried = new Set<string>();
    for (const o of outcomes) if (o.ok) for (const c of o.carried) carried.add(c);
    let waiting = refused.size > 0;
    for (const m of members) {
      const mk = memberKey(m.kind, m.obj.metadata.name);
      const verdict = plan.verdicts.get(mk);
      const item = plan.itemOf.get(mk);
      if (verdict?.state === 'removed' && allOk && (item === undefined || !carried.has(`${item.list}:${item.name}`))) {
        await removeFinalizer(client, m);
        continue;
      }
      if (verdict?.state === 'invalid') waiting = true;
      const st = memberStatus({
        ...statusBase(m, name),
        verdict:
          verdict?.state === 'removed' && item !== undefined && carried.has(`${item.list}:${item.name}`)
            ? { state: 'in-use', message: 'deletion waits: a share kept on the servers still uses it' }
            : verdict,
        pods: outcomes.map(publicOutcome),
        ...(m.kind === 'Store' ? { usedBy: plan.usedBy.get(m.obj.metadata.name) ?? [] } : {}),
      });
      await writeMemberStatus(out, m, st);
    }

    const failedPods = outcomes.filter((o) => !o.ok);
    if (failedPods.length > 0) {
      throw new Error(
        `push to ${failedPods.length}/${outcomes.length} pods failed: ${failedPods.map((o) => `${o.pod.name}: ${o.ok ? '' : o.error}`).join('; ')}`,
      );
    }
    if (behind.length > 0) {
      log.info('pods have not applied the newest control-plane generation yet; looking again', { pods: behind.map((o) => o.pod.name) });
      return { requeueAfterMs: CONVERGE_RECHECK_MS };
    }
    log.debug('synced', { pods: outcomes.length, users: plan.state.users.length, shares: plan.state.shares.length });
    return waiting ? { requeueAfterMs: RECHECK_MS } : {};
  };
}

type PushOutcome = PodOutcome & { refusedItem?: string };

const publicOutcome = (o: PushOutcome): PodOutcome =>
  o.ok ? { pod: o.pod, ok: true, generation: o.generation, carried: o.carried } : { pod: o.pod, ok: false, error: o.error };

async function pushToPod(api: DittofsApiClient, pod: PodEndpoint, creds: AdminCredentials, plan: StatePlan): Promise<PushOutcome> {
  try {
    let state = plan.state;
    let carried = new Set<string>();
    if (needsCurrentState(plan)) {
      const c = withCarryOver(plan, await api.getState(pod.url, creds));
      state = c.state;
      carried = c.carried;
    }
    const result = await api.putState(pod.url, creds, state);
    return { pod, ok: true, generation: result.generation, carried };
  } catch (e) {
    const error = errorMessage(e);
    const refusedItem = e instanceof DittofsApiError && e.status !== undefined && e.status < 500 ? e.item : undefined;
    return { pod, ok: false, error, ...(refusedItem === undefined ? {} : { refusedItem }) };
  }
}

function statusBase(m: Member, dittofs: string) {
  return { generation: m.obj.metadata.generation, conditions: m.obj.status?.conditions, dittofs };
}

async function adminCredentials(client: KubeClient, dfs: DittoFS, secrets: SecretValues): Promise<AdminCredentials | undefined> {
  const namespace = dfs.metadata.namespace ?? '';
  const secretName = childNames(dfs.metadata.name).adminSecret;
  const s = await client.get<SecretObject>(paths.secrets(namespace, secretName));
  // Someone else's Secret of that name (the DittoFS reconcile leaves it alone): no password of it is sent anywhere.
  if (s === undefined || onceSecretClaim(s, dfs) === 'foreign') return undefined;
  const password = secretValue(s, ADMIN_SECRET_KEYS.password);
  if (password === undefined || password === '') return undefined;
  const initialPassword = secretValue(s, ADMIN_SECRET_KEYS.initialPassword);
  // The user name is not a secret (it is `admin`); the passwords are.
  secrets.remember(namespace, secretName, ADMIN_SECRET_KEYS.password, password);
  if (initialPassword !== undefined) secrets.remember(namespace, secretName, ADMIN_SECRET_KEYS.initialPassword, initialPassword);
  return {
    username: secretValue(s, ADMIN_SECRET_KEYS.username) ?? ADMIN_USERNAME,
    password,
    ...(initialPassword === undefined ? {} : { initialPassword }),
  };
}

/**
 * Reads every Secret the members reference, once; the resolver answers from what was read and
 * remembers each value it hands out, so that no message quoting it is written.
 */
async function readSecrets(client: KubeClient, namespace: string, members: Member[], secrets: SecretValues): Promise<SecretResolver> {
  const refs: SecretKeyRef[] = [];
  for (const m of members) {
    if (m.kind === 'Store') refs.push(...Object.values(m.obj.spec.secretRefs ?? {}));
    if (m.kind === 'User' && m.obj.spec.passwordSecretRef !== undefined) refs.push(m.obj.spec.passwordSecretRef);
  }
  const read = new Map<string, SecretObject | undefined>();
  for (const r of refs) if (!read.has(r.name)) read.set(r.name, await client.get<SecretObject>(paths.secrets(namespace, r.name)));
  return (ref, what) => {
    const r = lookupSecret(read.get(ref.name), ref, what);
    if (r.ok) secrets.remember(namespace, ref.name, ref.key, r.value);
    return r;
  };
}

const KIND_OF: Readonly<Record<Member['kind'], KindName>> = { Store: 'Store', Share: 'Share', User: 'User' };

async function setFinalizers(client: KubeClient, m: Member, finalizers: string[]): Promise<void> {
  const { namespace, name, resourceVersion } = m.obj.metadata;
  await client.mergePatch(paths.custom(KIND_OF[m.kind], namespace, name), { metadata: { finalizers, resourceVersion } });
}

async function removeFinalizer(client: KubeClient, m: Member): Promise<void> {
  const fs = m.obj.metadata.finalizers ?? [];
  if (!fs.includes(FINALIZER)) return;
  try {
    await setFinalizers(
      client,
      m,
      fs.filter((f) => f !== FINALIZER),
    );
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}

interface StatusOut {
  client: KubeClient;
  redactor: Redactor;
  events: EventRecorder | undefined;
}

async function writeMemberStatus(out: StatusOut, m: Member, status: unknown): Promise<void> {
  const { namespace, name } = m.obj.metadata;
  try {
    await writeStatus(
      out.client,
      paths.custom(KIND_OF[m.kind], namespace, name, 'status'),
      m.obj.status,
      status,
      out.redactor,
      out.events && { recorder: out.events, regarding: { kind: KIND_OF[m.kind], metadata: m.obj.metadata } },
    );
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}
