// What the API needs from the running server. The server implements it; tests use a stand-in.
import type { LogLevel } from '../config/types.js';
import type { Adapter, AdapterType, StoreKind } from '../control/types.js';

export interface ReadinessCheck {
  ok: boolean;
  detail?: string;
}

export interface Readiness {
  ready: boolean;
  /** By component: `metadata:default`, `blocks:default`, `nfs`, ... */
  checks: Record<string, ReadinessCheck>;
  /** The control-plane generation this server applied (absent: no control plane yet). */
  applied_generation?: number;
}

/** A server that did not apply a control-plane change when the call that made it answered. */
export interface PendingReplica {
  server: string;
  /** The generation it had applied. */
  applied: number | null;
}

export interface ControlRuntime {
  /** The control-plane generation this server applied (-1: none yet). */
  appliedGeneration(): number;
  /**
   * After a change: applies the control database's current generation here and waits (bounded)
   * until every other server on it did; the ones that did not are pending.
   */
  converge(): Promise<{ generation: number; pending: PendingReplica[] }>;
}

/** What the running server serves for one adapter (server/src/adapters.ts). */
export interface AdapterServingReport {
  served: boolean;
  /** The port it listens on; null when not served. */
  port: number | null;
  /** Why this differs from the adapter row. */
  note?: string;
}

export interface AdaptersRuntime {
  /** Waits until this server applied the control database's current adapter rows (after a change). */
  settle(): Promise<void>;
  /** What this server serves for `type`, compared with `row`. */
  serving(type: AdapterType, row: Adapter): AdapterServingReport | undefined;
}

export interface ApiRuntime {
  /** For GET /health/ready: 200 when ready, 503 otherwise, with the checks either way. */
  ready(): Readiness;
  /**
   * For GET /health (liveness): why this server must be restarted (a store that failed for good:
   * the WAL after a failed fsync, a metadata store that lost what it answered), or null. Absent:
   * never.
   */
  failure?(): string | null;
  /**
   * Checks that a store with these settings can work (the directory is writable, the database or
   * bucket answers) before the control plane records it. Throws an Error whose message says what
   * is wrong (it is shown to the client as a 422 problem, secrets masked); resolves when it works.
   */
  checkStore(kind: StoreKind, type: string, config: Record<string, unknown>): Promise<void>;
  /** Applies a new log level at once (PUT /api/v1/settings/logging.level). */
  setLogLevel(level: LogLevel): void;
  /** The running server's listeners (absent in tests' stand-ins: `served` then says what the row asks). */
  adapters?: AdaptersRuntime;
  /** The running server's control-plane generations (absent in tests' stand-ins). */
  control?: ControlRuntime;
}
