// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it, so two
// operator replicas never reconcile at once.
//
// - A candidate takes the Lease when it is free (no holder) or expired: its record has not
//   changed for leaseDuration by the candidate's own clock (observed time, not the holder's
//   timestamps, so clock skew between nodes does not matter).
// - The leader renews every retryPeriod; every write carries the resourceVersion it read, so of
//   two candidates racing for one Lease exactly one wins (the other gets 409 Conflict).
// - A leader that could not renew for renewDeadline (< leaseDuration) stops leading before anyone
//   else can take over: onStoppedLeading runs, the work queues pause, and it becomes a candidate again.
// - stop() releases the Lease (holder cleared), so a successor takes over at once, not after
//   leaseDuration.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { isAlreadyExists, isConflict, type KubeClient } from '../kube/client.js';
import { microTime } from '../kube/conditions.js';
import { paths } from '../kube/resources.js';
import { errorFields, type Logger } from '../log.js';
import { sleep } from './backoff.js';

export interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number;
}

interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  spec?: LeaseSpec;
}

export interface LeaderElectionOptions {
  client: KubeClient;
  namespace: string;
  name: string;
  /** Default: hostname plus a random suffix (unique per process). */
  identity?: string;
  /** Default 15 s. */
  leaseDurationMs?: number;
  /** Default 10 s; must be less than leaseDurationMs. */
  renewDeadlineMs?: number;
  /** Default 2 s. */
  retryPeriodMs?: number;
  log: Logger;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

export class LeaderElector {
  readonly identity: string;
  private readonly o: Required<Omit<LeaderElectionOptions, 'identity'>>;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private leading = false;
  private observed: { record: string; at: number } | undefined;

  constructor(opts: LeaderElectionOptions) {
    this.identity = opts.identity ?? `${hostname()}_${randomBytes(4).toString('hex')}`;
    this.o = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      ...opts,
    };
    if (this.o.renewDeadlineMs >= this.o.leaseDurationMs) throw new RangeError('renewDeadline must be shorter than leaseDuration');
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops campaigning; a leader releases the Lease. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    if (this.leading) {
      this.leading = false;
      this.o.onStoppedLeading();
      await this.release().catch((e: unknown) => this.o.log.warn('releasing the lease failed', errorFields(e)));
    }
  }

  private get path(): string {
    return paths.leases(this.o.namespace, this.o.name);
  }

  private async run(): Promise<void> {
    const { log, retryPeriodMs, renewDeadlineMs } = this.o;
    const signal = this.abort.signal;
    const jittered = (): number => retryPeriodMs * (1 + 0.2 * Math.random());
    while (!signal.aborted) {
      // Campaign.
      while (!signal.aborted && !(await this.tryAcquireOrRenew())) await sleep(jittered(), signal);
      if (signal.aborted) return;
      this.leading = true;
      log.info('became the leader', { lease: `${this.o.namespace}/${this.o.name}`, identity: this.identity });
      this.o.onStartedLeading();
      // Lead.
      let lastRenew = Date.now();
      while (!signal.aborted) {
        await sleep(retryPeriodMs, signal);
        if (signal.aborted) return;
        if (await this.tryAcquireOrRenew(Math.max(1000, renewDeadlineMs - (Date.now() - lastRenew)))) {
          lastRenew = Date.now();
        } else if (Date.now() - lastRenew > renewDeadlineMs) {
          break;
        }
      }
      this.leading = false;
      log.warn('lost the leadership: no renewal within the renew deadline', { identity: this.identity });
      this.o.onStoppedLeading();
    }
  }

  /** One round: true when this process holds the Lease afterwards. Never throws. */
  private async tryAcquireOrRenew(timeoutMs = 5000): Promise<boolean> {
    const { client, log } = this.o;
    const now = new Date();
    const durationS = Math.ceil(this.o.leaseDurationMs / 1000);
    try {
      const lease = await withTimeout(client.get<Lease>(this.path), timeoutMs);
      if (lease === undefined) {
        try {
          await client.create(paths.leases(this.o.namespace), {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name: this.o.name, namespace: this.o.namespace },
            spec: {
              holderIdentity: this.identity,
              leaseDurationSeconds: durationS,
              acquireTime: microTime(now),
              renewTime: microTime(now),
              leaseTransitions: 0,
            },
          });
          return true;
        } catch (e) {
          if (isAlreadyExists(e) || isConflict(e)) return false;
          throw e;
        }
      }
      const spec = lease.spec ?? {};
      const record = JSON.stringify([spec.holderIdentity ?? '', spec.renewTime ?? '', spec.leaseTransitions ?? 0]);
      if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
      const holder = spec.holderIdentity ?? '';
      const mine = holder === this.identity;
      const heldMs = (spec.leaseDurationSeconds ?? durationS) * 1000;
      if (!mine && holder !== '' && this.observed.at + heldMs > Date.now()) return false;
      const next: Lease = {
        ...lease,
        spec: {
          ...spec,
          holderIdentity: this.identity,
          leaseDurationSeconds: durationS,
          renewTime: microTime(now),
          acquireTime: mine ? (spec.acquireTime ?? microTime(now)) : microTime(now),
          leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
        },
      };
      await withTimeout(client.replace(this.path, next), timeoutMs);
      if (!mine) log.info('took over the lease', { previous: holder === '' ? null : holder });
      return true;
    } catch (e) {
      if (!isConflict(e)) log.warn('lease request failed', { lease: this.o.name, ...errorFields(e) });
      return false;
    }
  }

  /** Clears the holder if it is still us, so a successor need not wait for the Lease to expire. */
  private async release(): Promise<void> {
    const lease = await this.o.client.get<Lease>(this.path);
    if (lease?.spec?.holderIdentity !== this.identity) return;
    await this.o.client.replace(this.path, {
      ...lease,
      spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, acquireTime: null, renewTime: microTime(new Date()) },
    });
    this.o.log.info('released the lease', { lease: `${this.o.namespace}/${this.o.name}` });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`lease request: no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
