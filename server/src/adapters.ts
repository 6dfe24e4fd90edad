// The protocol listeners (NFS + MOUNT, SMB) as the control plane changes them while the server runs.
//
// At start a server listens where its config file and environment say (infrastructure: the
// operator's ports, the Service, the firewall). A change of an adapter row through the API is an
// edge: every server on the control database applies it at once (start, stop or move the
// listener) and keeps it until it restarts. A start never rewrites the rows (it only seeds them on
// the first start): servers sharing one control database may listen on different ports (several
// on one host), and one server's start must not move the others.
//
// A move starts the new listener first and stops the old one only once the new one listens: a
// port that cannot be bound leaves the old listener serving (no gap, nothing half-applied), the
// failure is logged and shown by readiness and the adapter API, and it is tried again with every
// later control-plane change.
import type { Logger } from 'pino';
import type { Adapter, AdapterType } from './control/types.js';
import { ADAPTER_TYPES } from './control/types.js';
import { errorMessage } from './error-message.js';
import { protocolImplemented } from './protocols.js';

/** One running listener of an adapter (for NFS: NFS + MOUNT on one port). */
export interface AdapterListener {
  /** The port it listens on (the system's choice when asked for 0). */
  readonly port: number;
  /** The port it was asked for. */
  readonly requested: number;
  /** Stops accepting, closes its connections as shutdown does. */
  close(): Promise<void>;
}

/** What a server serves for one adapter, for the adapter API and readiness. */
export interface AdapterServing {
  /** A listener runs. */
  served: boolean;
  /** Its port, or null when none runs. */
  port: number | null;
  /** Why this differs from the adapter row (a failed bind, the config file's setting since the start). */
  note?: string;
  /** For readiness: false when the last change could not be applied, or the listener is not up yet. */
  ok: boolean;
}

type Wanted = { enabled: boolean; port: number; from: 'config' | 'api' };

/** One adapter's listener, started, stopped and moved one change at a time. */
export class LiveAdapter {
  private current: AdapterListener | null = null;
  private wanted: Wanted;
  private failure: string | null = null;
  private started = false;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly type: AdapterType,
    private readonly start: (port: number) => Promise<AdapterListener>,
    private readonly log: Logger,
    /** Called after a change leaves no listener running (the NFS adapter stops its portmapper). */
    private readonly onStopped: () => Promise<void> = () => Promise.resolve(),
    config: { enabled: boolean; port: number },
  ) {
    this.wanted = { ...config, from: 'config' };
  }

  /** The start-up: the config file's setting; a failure fails the start (nothing served yet). */
  async open(): Promise<void> {
    if (this.wanted.enabled && protocolImplemented(this.type)) this.current = await this.start(this.wanted.port);
    this.started = true;
  }

  /** Applies a changed row (serialized with other changes and retries). */
  apply(row: Adapter): Promise<void> {
    this.wanted = { enabled: row.enabled, port: row.port, from: 'api' };
    return this.reconcile();
  }

  /** Tries a change that failed again (a port that was busy may be free now). */
  retry(): Promise<void> {
    return this.failure === null ? this.queue : this.reconcile();
  }

  private reconcile(): Promise<void> {
    this.queue = this.queue.then(() => this.step());
    return this.queue;
  }

  private async step(): Promise<void> {
    if (!this.started) return; // open() applies `wanted`
    const w = this.wanted;
    const cur = this.current;
    if (!w.enabled || !protocolImplemented(this.type)) {
      this.failure = null;
      if (cur === null) return;
      this.current = null;
      this.log.info({ adapter: this.type, port: cur.port }, `${this.type} adapter disabled: listener stopped`);
      await cur.close();
      await this.onStopped();
      return;
    }
    if (cur !== null && cur.requested === w.port) {
      this.failure = null;
      return;
    }
    let next: AdapterListener;
    try {
      next = await this.start(w.port);
    } catch (err) {
      this.failure = errorMessage(err);
      this.log.error(
        { adapter: this.type, port: w.port, err: this.failure, still: cur?.port ?? null },
        cur === null
          ? `${this.type} adapter not started: ${this.failure}`
          : `${this.type} adapter not moved to port ${w.port}, still listening on ${cur.port}: ${this.failure}`,
      );
      return;
    }
    this.failure = null;
    this.current = next;
    this.log.info({ adapter: this.type, port: next.port, from: cur?.port ?? null }, `${this.type} adapter listening on port ${next.port}`);
    if (cur !== null) await cur.close();
  }

  /** What this server serves, against the adapter row `row`. */
  serving(row?: Adapter): AdapterServing {
    const cur = this.current;
    const base = { served: cur !== null, port: cur?.port ?? null };
    if (!this.started) return { ...base, ok: !this.wanted.enabled, note: 'not listening yet (starting)' };
    if (this.failure !== null) {
      const still = cur === null ? 'not served' : `still listening on port ${cur.port}`;
      return { ...base, ok: false, note: `port ${this.wanted.port} could not be bound (${this.failure}); ${still}` };
    }
    if (row === undefined || this.wanted.from === 'api') return { ...base, ok: true };
    // Since the start: the config file's setting, which the row (last changed through the API) may not say.
    const rowServed = row.enabled && protocolImplemented(this.type);
    if (rowServed === base.served && (!base.served || row.port === this.wanted.port)) return { ...base, ok: true };
    const cfg = this.wanted.enabled ? `enabled on port ${this.wanted.port}` : 'disabled';
    return { ...base, ok: true, note: `this server's config file has it ${cfg} since its start; a change through the API applies at once` };
  }

  /** Shutdown: stops the listener (if any). */
  async close(): Promise<void> {
    await this.queue;
    const cur = this.current;
    this.current = null;
    this.started = false;
    if (cur) await cur.close();
  }
}

/**
 * The adapters of a running server: the rows of each control-plane snapshot are compared with the
 * last ones seen, and a changed row is applied to its listener (an edge, see the top of the file).
 * Rows seen before the listeners exist are kept and applied once they do.
 */
export class AdapterRuntime {
  private last: Map<AdapterType, string> | null = null;
  private readonly rows = new Map<AdapterType, Adapter>();
  private readonly changed = new Set<AdapterType>();
  private readonly live = new Map<AdapterType, LiveAdapter>();

  /** Called with every snapshot the control applier applies (the first one is the baseline). */
  async observe(rows: readonly Adapter[]): Promise<void> {
    const seen = new Map(rows.map((r) => [r.type, `${r.enabled}:${r.port}`] as const));
    for (const r of rows) {
      this.rows.set(r.type, r);
      if (this.last !== null && this.last.get(r.type) !== seen.get(r.type)) this.changed.add(r.type);
    }
    this.last = seen;
    await this.flush();
  }

  /** Hands an adapter's listener over (once it is open): changes seen meanwhile apply now. */
  async attach(a: LiveAdapter): Promise<void> {
    this.live.set(a.type, a);
    await this.flush();
  }

  private async flush(): Promise<void> {
    for (const [type, a] of this.live) {
      const row = this.rows.get(type);
      if (row !== undefined && this.changed.delete(type)) await a.apply(row);
      else await a.retry();
    }
  }

  /** What this server serves for `type` (against the row last seen, or the one given). */
  serving(type: AdapterType, row?: Adapter): AdapterServing | undefined {
    return this.live.get(type)?.serving(row ?? this.rows.get(type));
  }

  /**
   * Both adapters, for readiness: `nfs`, `smb`. A move that could not bind its new port leaves the
   * server ready while the old listener serves, with the reason as the check's detail: a 503 would
   * take the server, old port and all, out of a Kubernetes Service for a change that broke nothing.
   * Not ready: an adapter that is wanted and serves nowhere.
   */
  readiness(): Record<string, { ok: boolean; detail?: string }> {
    const out: Record<string, { ok: boolean; detail?: string }> = {};
    for (const type of ADAPTER_TYPES) {
      const s = this.serving(type);
      out[type] =
        s === undefined
          ? { ok: false, detail: 'not listening yet' }
          : s.ok
            ? { ok: true }
            : { ok: s.served, detail: s.note ?? 'not listening' };
    }
    return out;
  }
}
