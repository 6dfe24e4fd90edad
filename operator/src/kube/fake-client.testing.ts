// An in-memory stand-in for KubeClient, for unit tests of the reconcilers (the real apiserver runs
// in test/k8s/operator.test.ts). Objects live by path; apply replaces the object (no field
// management), mergePatch merges (RFC 7386), Events are kept in `events`. Not part of the build.
import { KubeApiError, type KubeClient } from './client.js';

export interface FakeCall {
  verb: 'get' | 'create' | 'apply' | 'mergePatch' | 'request';
  path: string;
  body?: unknown;
}

export class FakeKubeClient {
  readonly objects = new Map<string, Record<string, unknown>>();
  readonly calls: FakeCall[] = [];
  readonly events: Record<string, unknown>[] = [];
  private uid = 0;

  /** This fake, typed as what the reconcilers take. */
  get client(): KubeClient {
    return this as unknown as KubeClient;
  }

  put(path: string, obj: object): void {
    this.objects.set(path, structuredClone(obj) as Record<string, unknown>);
  }

  async get<T>(path: string): Promise<T | undefined> {
    this.calls.push({ verb: 'get', path });
    const o = this.objects.get(path);
    return o === undefined ? undefined : (structuredClone(o) as T);
  }

  async create<T>(collection: string, obj: { metadata?: { name?: string } }): Promise<T> {
    this.calls.push({ verb: 'create', path: collection, body: obj });
    const path = `${collection}/${obj.metadata?.name ?? ''}`;
    if (this.objects.has(path)) throw new KubeApiError(409, 'AlreadyExists', 'already exists', 'POST', collection);
    const stored = structuredClone(obj) as Record<string, unknown> & { metadata: Record<string, unknown> };
    stored.metadata = { ...stored.metadata, uid: `uid-${++this.uid}`, resourceVersion: '1' };
    this.objects.set(path, stored);
    return structuredClone(stored) as T;
  }

  async apply<T>(path: string, obj: object): Promise<T> {
    this.calls.push({ verb: 'apply', path, body: obj });
    const old = this.objects.get(path) as { metadata?: Record<string, unknown> } | undefined;
    const stored = structuredClone(obj) as Record<string, unknown> & { metadata?: Record<string, unknown> };
    stored.metadata = { ...stored.metadata, uid: old?.metadata?.uid ?? `uid-${++this.uid}` };
    this.objects.set(path, stored);
    return structuredClone(stored) as T;
  }

  async mergePatch<T>(path: string, patch: unknown): Promise<T> {
    this.calls.push({ verb: 'mergePatch', path, body: patch });
    const base = path.replace(/\/status$/, '');
    const o = this.objects.get(base);
    if (o === undefined) throw new KubeApiError(404, 'NotFound', 'not found', 'PATCH', path);
    const merged = mergePatch(o, patch) as Record<string, unknown>;
    this.objects.set(base, merged);
    return structuredClone(merged) as T;
  }

  async request<T>(method: string, path: string, opts: { body?: unknown } = {}): Promise<T> {
    this.calls.push({ verb: 'request', path, body: opts.body });
    if (method === 'POST' && path.endsWith('/events')) this.events.push(structuredClone(opts.body) as Record<string, unknown>);
    return undefined as T;
  }
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return structuredClone(patch);
  const out: Record<string, unknown> =
    target !== null && typeof target === 'object' && !Array.isArray(target) ? structuredClone(target as Record<string, unknown>) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}
