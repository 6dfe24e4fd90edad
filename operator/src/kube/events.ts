// Kubernetes Events (events.k8s.io/v1) for what the operator does and what fails: one per change of
// a status condition (Ready, Synced, Degraded: its new status and reason) and of a DittoFS phase,
// on the object it concerns, so `kubectl describe` and `kubectl get events` tell the story. Events
// are best effort: a failure to record one is logged at debug level and changes nothing else.
//
// Bounded: the same (object, reason, note) is recorded at most once per DEDUP_MS, and the memory of
// what was recorded holds at most DEDUP_CAP entries (the oldest go first).
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import { API_VERSION, type Condition, type KubeObject } from '../api/types.js';
import type { KubeClient } from './client.js';
import type { SecretValues } from './redact.js';
import { errorMessage } from '../error-message.js';

export type EventType = 'Normal' | 'Warning';

export interface OperatorEvent {
  type: EventType;
  reason: string;
  note: string;
}

/** The object an event is about: what the status belongs to. */
export interface Regarding {
  kind: string;
  metadata: KubeObject['metadata'];
}

const DEDUP_MS = 10 * 60_000;
const DEDUP_CAP = 1024;
/** events.k8s.io/v1 limits: reason 128 characters, note 1 kB. */
const REASON_MAX = 128;
const NOTE_MAX = 1024;

interface StatusLike {
  phase?: string;
  conditions?: Condition[];
}

/**
 * The events a status change deserves: a condition that appears or changes status or reason, and a
 * new phase. A condition that is True is Normal; False is a Warning for Ready, Synced and most
 * others, but Normal for Degraded (False there is the good news) and for a reason that is what the
 * user asked for (NORMAL_REASONS: a DittoFS scaled to zero is not Ready, as asked).
 */
const NORMAL_REASONS = new Set(['ScaledToZero']);

export function statusEvents(from: unknown, to: unknown): OperatorEvent[] {
  const a = (from ?? {}) as StatusLike;
  const b = (to ?? {}) as StatusLike;
  const out: OperatorEvent[] = [];
  if (b.phase !== undefined && b.phase !== a.phase) {
    out.push({
      type: b.phase === 'Failed' ? 'Warning' : 'Normal',
      reason: `Phase${b.phase}`,
      note: `phase ${a.phase ?? 'none'} -> ${b.phase}`,
    });
  }
  for (const c of b.conditions ?? []) {
    const old = a.conditions?.find((o) => o.type === c.type);
    if (old !== undefined && old.status === c.status && old.reason === c.reason) continue;
    const good = (c.type === 'Degraded' ? c.status === 'False' : c.status === 'True') || NORMAL_REASONS.has(c.reason ?? '');
    out.push({
      type: good || c.status === 'Unknown' ? 'Normal' : 'Warning',
      reason: c.reason ?? `${c.type}${c.status}`,
      note: `${c.type}=${c.status}${c.message === undefined || c.message === '' ? '' : `: ${c.message}`}`,
    });
  }
  return out;
}

export class EventRecorder {
  private readonly recent = new Map<string, number>();

  constructor(
    private readonly client: KubeClient,
    private readonly log: Logger,
    /** This operator process (its leader identity), as the events' reportingInstance. */
    private readonly instance: string,
    /** Notes go through it: no Secret value the operator read reaches an Event (redact.ts). */
    private readonly secrets?: SecretValues,
    private readonly controller = 'dittofs.io/dittofs-operator',
  ) {}

  /** Records the event; never throws. */
  async record(regarding: Regarding, ev: OperatorEvent, now = Date.now()): Promise<void> {
    const { namespace, name, uid } = regarding.metadata;
    if (namespace === undefined) return;
    // Redacted before it is cut to size, so that no value's beginning survives the cut.
    if (this.secrets !== undefined) ev = { ...ev, note: this.secrets.forNamespace(namespace).redact(ev.note) };
    const key = `${uid ?? `${namespace}/${name}`}\u0000${ev.reason}\u0000${ev.note}`;
    const seen = this.recent.get(key);
    if (seen !== undefined && now - seen < DEDUP_MS) return;
    this.recent.delete(key);
    this.recent.set(key, now);
    while (this.recent.size > DEDUP_CAP) this.recent.delete(this.recent.keys().next().value!);
    const reason = ev.reason.slice(0, REASON_MAX);
    const body = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      // As client-go names them: the object and the time in hex (a generateName may not end in '.').
      metadata: { name: `${name}.${(BigInt(now) * 1_000_000n).toString(16)}${randomBytes(2).toString('hex')}`, namespace },
      eventTime: new Date(now).toISOString().replace(/Z$/, '000Z'),
      reportingController: this.controller,
      reportingInstance: this.instance.slice(0, 128),
      action: reason,
      reason,
      note: ev.note.slice(0, NOTE_MAX),
      type: ev.type,
      regarding: { apiVersion: API_VERSION, kind: regarding.kind, namespace, name, ...(uid === undefined ? {} : { uid }) },
    };
    try {
      await this.client.request('POST', `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/events`, { body });
    } catch (e) {
      this.log.debug('event not recorded', { reason, object: `${namespace}/${name}`, error: errorMessage(e) });
    }
  }

  /** The events of a status change (statusEvents), recorded one after the other. */
  async statusChanged(regarding: Regarding, from: unknown, to: unknown): Promise<void> {
    for (const ev of statusEvents(from, to)) await this.record(regarding, ev);
  }
}
