// The DittoFS operator: informers feed two keyed work queues, leader election gates them.
//
//   DittoFS, StatefulSet, Service, Secret events ──> queue "dittofs" (key ns/name) ──> controllers/dittofs
//   Store, Share, User, Pod, Secret events ────────> queue "state"   (key ns/dittofs) ──> controllers/state
//
// Built on @dot-i/k8s-operator's Operator (kubeconfig loading, the start/init/stop life cycle and
// its watchResource() hook), with watchResource() overridden: the library's version exits the
// process on the first watch error and restarts a closed watch without a resourceVersion; ours
// (kube/informer.ts) re-establishes every watch from where it stopped, relists with a diff when
// the apiserver has moved past it, and never exits.
import http from 'node:http';
import os from 'node:os';
import k8sOperator, { type ResourceEvent } from '@dot-i/k8s-operator';
import type { V1Pod } from '@kubernetes/client-node';
import {
  GROUP,
  LABELS,
  MANAGED_BY,
  VERSION,
  keyOf,
  type DittoFS,
  type KindName,
  type KubeObject,
  type SecretKeyRef,
  type Share,
  type Store,
  type User,
} from './api/types.js';
import type { OperatorConfig } from './config.js';
import { dittofsReconciler } from './controllers/dittofs/reconcile.js';
import { stateReconciler, type StateCache } from './controllers/state/reconcile.js';
import { DittofsApiClient } from './dittofs-api/client.js';
import { podAddressResolver, type PodAddressResolver } from './dittofs-api/pods.js';
import { KubeClient } from './kube/client.js';
import { Informer, type InformerEventType } from './kube/informer.js';
import { EventRecorder } from './kube/events.js';
import { redactingLogger, SecretValues } from './kube/redact.js';
import { paths } from './kube/resources.js';
import { errorFields, type Logger } from './log.js';
import { LeaderElector } from './runtime/leader.js';
import { WorkQueue } from './runtime/workqueue.js';

const Operator = k8sOperator.default;

const CUSTOM_PLURALS: Readonly<Record<string, KindName>> = { dittofses: 'DittoFS', stores: 'Store', shares: 'Share', users: 'User' };

export interface OperatorDeps {
  log: Logger;
  /** Secret values read, kept out of statuses, Events and logs (kube/redact.ts); a new one when absent. */
  secrets?: SecretValues;
}

type Members = { Store: Store; Share: Share; User: User };

/** What changed in an object that a reconcile cares about (status-only updates are ignored). */
function specChanged(type: InformerEventType, obj: KubeObject, old: KubeObject | undefined): boolean {
  if (type !== 'MODIFIED' || old === undefined) return true;
  const a = obj.metadata;
  const b = old.metadata;
  return (
    a.generation !== b.generation ||
    a.deletionTimestamp !== b.deletionTimestamp ||
    JSON.stringify(a.finalizers ?? []) !== JSON.stringify(b.finalizers ?? []) ||
    JSON.stringify(a.annotations ?? {}) !== JSON.stringify(b.annotations ?? {}) ||
    JSON.stringify(a.labels ?? {}) !== JSON.stringify(b.labels ?? {})
  );
}

/** Secrets and Pods are cached without their payload: only what event routing needs. */
function metadataOnly<T extends KubeObject>(obj: T): T {
  const { name, namespace, uid, resourceVersion, labels, ownerReferences, deletionTimestamp } = obj.metadata;
  return {
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: { name, namespace, uid, resourceVersion, labels, ownerReferences, deletionTimestamp },
  } as T;
}

function podEssentials(pod: V1Pod & KubeObject): V1Pod & KubeObject {
  const base = metadataOnly(pod);
  return { ...base, status: { conditions: pod.status?.conditions?.filter((c) => c.type === 'Ready'), podIP: pod.status?.podIP } };
}

const podReadiness = (p: V1Pod | undefined): string =>
  JSON.stringify([
    p?.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? '',
    p?.status?.podIP ?? '',
    p?.metadata?.deletionTimestamp !== undefined,
  ]);

export class DittofsOperator extends Operator {
  readonly client: KubeClient;
  readonly queues: { dittofs: WorkQueue; state: WorkQueue };
  readonly elector: LeaderElector | undefined;
  readonly pods: PodAddressResolver;
  private readonly log: Logger;
  private readonly cfg: OperatorConfig;
  private readonly informers: Informer<KubeObject>[] = [];
  private readonly byKind = {
    DittoFS: [] as Informer<DittoFS>[],
    Store: [] as Informer<Store>[],
    Share: [] as Informer<Share>[],
    User: [] as Informer<User>[],
    Pod: [] as Informer<V1Pod & KubeObject>[],
  };
  private resyncTimer: NodeJS.Timeout | undefined;
  private health: http.Server | undefined;
  private leading = false;
  private stopped = false;

  constructor(cfg: OperatorConfig, deps: OperatorDeps) {
    const secrets = deps.secrets ?? new SecretValues();
    const log = redactingLogger(deps.log, secrets);
    super({
      debug: (m) => log.debug(m, { component: 'k8s-operator' }),
      info: (m) => log.info(m, { component: 'k8s-operator' }),
      warn: (m) => log.warn(m, { component: 'k8s-operator' }),
      error: (m) => log.error(m, { component: 'k8s-operator' }),
    });
    this.cfg = cfg;
    this.log = log;
    if (cfg.kubeconfig !== undefined) this.kubeConfig.loadFromFile(cfg.kubeconfig);
    this.client = new KubeClient(this.kubeConfig);
    this.pods = podAddressResolver(cfg.podAddressMode, {
      clusterDomain: cfg.clusterDomain,
      pods: () => this.byKind.Pod.flatMap((i) => i.list()),
    });
    // Queues start paused: nothing is reconciled before every cache has its first list (a state
    // sync against a half-filled cache would see a DittoFS as missing), nor before leadership.
    const paused = true;
    const onError = (queue: string) => (key: string, err: unknown, failures: number, retryInMs: number) =>
      log.warn('reconcile failed; retrying', {
        queue,
        key,
        failures,
        retryInMs,
        ...errorFields(err, log.level === 'debug' || log.level === 'trace'),
      });
    const api = new DittofsApiClient({ log: log.child({ component: 'dittofs-api' }) });
    const events = new EventRecorder(
      this.client,
      log.child({ component: 'events' }),
      cfg.leaderElection.identity ?? os.hostname(),
      secrets,
    );
    const stateCache: StateCache = {
      dittofs: (ns, name) => this.findIn(this.byKind.DittoFS, ns, name),
      stores: (ns) => this.listIn(this.byKind.Store, ns),
      shares: (ns) => this.listIn(this.byKind.Share, ns),
      users: (ns) => this.listIn(this.byKind.User, ns),
    };
    const state = new WorkQueue({
      name: 'state',
      concurrency: cfg.concurrency,
      paused,
      onError: onError('state'),
      reconcile: stateReconciler({
        client: this.client,
        api,
        pods: this.pods,
        cache: stateCache,
        log: log.child({ controller: 'state' }),
        events,
        secrets,
      }),
    });
    const dittofs = new WorkQueue({
      name: 'dittofs',
      concurrency: cfg.concurrency,
      paused,
      onError: onError('dittofs'),
      reconcile: dittofsReconciler({
        client: this.client,
        log: log.child({ controller: 'dittofs' }),
        defaultImage: cfg.defaultImage,
        clusterDomain: cfg.clusterDomain,
        afterReconcile: (key) => state.add(key),
        events,
        secrets,
      }),
    });
    this.queues = { dittofs, state };
    this.elector = cfg.leaderElection.enabled
      ? new LeaderElector({
          client: this.client,
          namespace: cfg.leaderElection.leaseNamespace,
          name: cfg.leaderElection.leaseName,
          ...(cfg.leaderElection.identity === undefined ? {} : { identity: cfg.leaderElection.identity }),
          log: log.child({ component: 'leader-election' }),
          onStartedLeading: () => this.lead(),
          onStoppedLeading: () => this.follow(),
        })
      : undefined;
  }

  /** True while this process reconciles (always, without leader election). */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Every informer's first list is in. */
  get synced(): boolean {
    return this.informers.every((i) => i.hasSynced);
  }

  // ---- life cycle (Operator.start() calls init())

  protected async init(): Promise<void> {
    const nss = this.cfg.namespaces.length === 0 ? [undefined] : this.cfg.namespaces;
    for (const ns of nss) {
      for (const plural of Object.keys(CUSTOM_PLURALS)) await this.watchResource(GROUP, VERSION, plural, async () => undefined, ns);
      const managed = `${LABELS.managedBy}=${MANAGED_BY}`;
      this.watch<KubeObject>(paths.statefulSets(ns), 'statefulsets', { labelSelector: managed }, (_t, o) => this.ownerChanged(o));
      this.watch<KubeObject>(paths.services(ns), 'services', { labelSelector: managed }, (_t, o) => this.ownerChanged(o));
      this.watch<KubeObject>(paths.secrets(ns), 'secrets', { transform: metadataOnly }, (_t, o) => this.secretChanged(o));
      if (this.pods.mode !== 'annotation') {
        const inf = this.watch<V1Pod & KubeObject>(
          paths.pods(ns),
          'pods',
          { labelSelector: managed, transform: podEssentials },
          (t, o, old) => {
            if (t !== 'MODIFIED' || podReadiness(o) !== podReadiness(old))
              this.enqueueState(o.metadata.namespace ?? '', o.metadata.labels?.[LABELS.instance]);
          },
        );
        this.byKind.Pod.push(inf);
      }
    }
    await Promise.all(this.informers.map((i) => i.synced()));
    this.log.info('caches synced', {
      namespaces: this.cfg.namespaces.length === 0 ? 'all' : this.cfg.namespaces,
      podAddressMode: this.pods.mode,
      leaderElection: this.cfg.leaderElection.enabled,
    });
    this.resyncTimer = setInterval(() => this.enqueueAll('resync'), this.cfg.resyncMs);
    this.resyncTimer.unref();
    if (this.elector !== undefined) this.elector.start();
    else this.lead();
  }

  /** Starts the health endpoint (if configured), the informers and the controllers. */
  override async start(): Promise<void> {
    if (this.cfg.healthPort > 0) await this.startHealth(this.cfg.healthPort);
    await super.start();
  }

  override stop(): void {
    void this.shutdown();
  }

  /** Stops watching and reconciling: releases the Lease and waits for reconciles in flight. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.resyncTimer !== undefined) clearInterval(this.resyncTimer);
    // Finish the reconciles in flight before the Lease goes: a successor must not overlap them.
    this.leading = false;
    await Promise.all([this.queues.dittofs.shutdown(), this.queues.state.shutdown()]);
    await this.elector?.stop();
    await Promise.all(this.informers.map((i) => i.stop()));
    super.stop();
    this.client.close();
    await new Promise<void>((resolve) => (this.health === undefined ? resolve() : this.health.close(() => resolve())));
    this.log.info('stopped');
  }

  /** Drops every watch connection (as a network failure would); `staleResourceVersion` forces relists. For tests. */
  dropWatchConnections(staleResourceVersion?: string): number {
    let n = 0;
    for (const i of this.informers) if (i.dropConnection(staleResourceVersion)) n++;
    return n;
  }

  /** Informer statistics by name. For tests and debugging. */
  informerStats(): Record<string, { lists: number; watches: number; errors: number; gone: number }> {
    return Object.fromEntries(this.informers.map((i) => [i.name, { ...i.stats }]));
  }

  // ---- @dot-i/k8s-operator hook

  protected override async watchResource(
    group: string,
    version: string,
    plural: string,
    onEvent: (event: ResourceEvent) => Promise<void>,
    namespace?: string,
  ): Promise<void> {
    const kind = CUSTOM_PLURALS[plural];
    const path =
      kind !== undefined && group === GROUP
        ? paths.custom(kind, namespace)
        : `${group === '' ? `/api/${version}` : `/apis/${group}/${version}`}${namespace === undefined ? '' : `/namespaces/${namespace}`}/${plural}`;
    const inf = this.watch<KubeObject>(path, plural, {}, (type, obj, old) => {
      if (kind !== undefined) this.customChanged(kind, type, obj, old);
      const event = {
        meta: k8sOperator.ResourceMetaImpl.createWithPlural(plural, {
          apiVersion: `${group}/${version}`,
          kind: obj.kind ?? kind ?? plural,
          ...obj,
        } as never),
        object: obj as never,
        type: type as ResourceEvent['type'],
      };
      onEvent(event).catch((e: unknown) => this.log.error('event handler failed', errorFields(e)));
    });
    if (kind !== undefined) (this.byKind[kind] as unknown as Informer<KubeObject>[]).push(inf);
  }

  // ---- event routing

  private watch<T extends KubeObject>(
    path: string,
    name: string,
    opts: { labelSelector?: string; transform?: (o: T) => T },
    handler: (type: InformerEventType, obj: T, old: T | undefined) => void,
  ): Informer<T> {
    const inf = new Informer<T>({
      client: this.client,
      path,
      name,
      log: this.log.child({ component: 'informer' }),
      ...(opts.labelSelector === undefined ? {} : { labelSelector: opts.labelSelector }),
      ...(opts.transform === undefined ? {} : { transform: opts.transform }),
    });
    inf.on(handler);
    this.informers.push(inf as unknown as Informer<KubeObject>);
    inf.start();
    return inf;
  }

  private customChanged(kind: KindName, type: InformerEventType, obj: KubeObject, old: KubeObject | undefined): void {
    if (!specChanged(type, obj, old)) return;
    const ns = obj.metadata.namespace ?? '';
    if (kind === 'DittoFS') {
      this.queues.dittofs.add(keyOf(obj));
      this.queues.state.add(keyOf(obj));
      return;
    }
    const m = obj as Members[typeof kind];
    this.enqueueState(ns, m.spec?.dittofs);
    const before = old as Members[typeof kind] | undefined;
    if (before?.spec?.dittofs !== undefined && before.spec.dittofs !== m.spec?.dittofs) this.enqueueState(ns, before.spec.dittofs);
  }

  /** A StatefulSet or Service of a DittoFS changed: reconcile the DittoFS (status, drift, recreation). */
  private ownerChanged(obj: KubeObject): void {
    const owner =
      obj.metadata.ownerReferences?.find((o) => o.kind === 'DittoFS' && o.controller === true)?.name ??
      obj.metadata.labels?.[LABELS.instance];
    if (owner !== undefined) this.queues.dittofs.add(`${obj.metadata.namespace ?? ''}/${owner}`);
  }

  /** A Secret changed: whoever references it, or owns it, looks again. */
  private secretChanged(secret: KubeObject): void {
    const ns = secret.metadata.namespace ?? '';
    const name = secret.metadata.name;
    // NAME-admin and NAME-jwt have no owner (they outlive the DittoFS): their labels name it.
    const labels = secret.metadata.labels ?? {};
    const owner =
      secret.metadata.ownerReferences?.find((o) => o.kind === 'DittoFS')?.name ??
      (labels[LABELS.managedBy] === MANAGED_BY ? labels[LABELS.instance] : undefined);
    if (owner !== undefined) {
      this.queues.dittofs.add(`${ns}/${owner}`);
      this.queues.state.add(`${ns}/${owner}`);
    }
    const refers = (r: SecretKeyRef | undefined): boolean => r?.name === name;
    for (const d of this.listIn(this.byKind.DittoFS, ns))
      if (refers(d.spec.database?.postgres?.urlSecretRef)) this.queues.dittofs.add(keyOf(d));
    for (const s of this.listIn(this.byKind.Store, ns))
      if (Object.values(s.spec.secretRefs ?? {}).some(refers)) this.enqueueState(ns, s.spec.dittofs);
    for (const u of this.listIn(this.byKind.User, ns)) if (refers(u.spec.passwordSecretRef)) this.enqueueState(ns, u.spec.dittofs);
  }

  private enqueueState(ns: string, dittofs: string | undefined): void {
    if (dittofs !== undefined && dittofs !== '') this.queues.state.add(`${ns}/${dittofs}`);
  }

  /** Everything, once: at leadership and every resync period. */
  private enqueueAll(why: string): void {
    const keys = new Set<string>();
    for (const d of this.byKind.DittoFS.flatMap((i) => i.list())) {
      this.queues.dittofs.add(keyOf(d));
      keys.add(keyOf(d));
    }
    for (const kind of ['Store', 'Share', 'User'] as const) {
      for (const m of (this.byKind[kind] as Informer<Store | Share | User>[]).flatMap((i) => i.list()))
        keys.add(`${m.metadata.namespace ?? ''}/${m.spec.dittofs}`);
    }
    for (const k of keys) this.queues.state.add(k);
    this.log.debug('enqueued everything', { why, dittofs: keys.size });
  }

  private lead(): void {
    if (this.stopped) return;
    this.leading = true;
    this.queues.dittofs.resume();
    this.queues.state.resume();
    this.enqueueAll('leading');
  }

  private follow(): void {
    this.leading = false;
    this.queues.dittofs.pause();
    this.queues.state.pause();
  }

  private findIn<T extends KubeObject>(infs: Informer<T>[], ns: string, name: string): T | undefined {
    for (const i of infs) {
      const o = i.get(ns, name);
      if (o !== undefined) return o;
    }
    return undefined;
  }

  private listIn<T extends KubeObject>(infs: Informer<T>[], ns: string): T[] {
    return infs.flatMap((i) => i.list(ns));
  }

  private async startHealth(port: number): Promise<void> {
    this.health = http.createServer((req, res) => {
      const ok = req.url === '/healthz' ? true : req.url === '/readyz' ? this.synced : undefined;
      if (ok === undefined) res.writeHead(404).end('not found\n');
      else res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'caches not synced\n');
    });
    await new Promise<void>((resolve, reject) => {
      this.health!.once('error', reject);
      this.health!.listen(port, () => resolve());
    });
  }
}
