// The control plane inside a running server: its database opened and seeded at start, the shares,
// permissions and settings it holds applied to the file service, and re-applied after every change
// (a new share is mountable, a removed share unserved and a permission in force before the API
// answers the request that made the change).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { DEFAULT_BLOCK_SIZE } from './config/defaults.js';
import { redactSecrets } from './config/errors.js';
import type { BlockStoreConfig, DittoConfig, LogLevel, MetadataStoreConfig, ShareConfig } from './config/types.js';
import { LOG_LEVELS } from './config/types.js';
import {
  buildAccessIndex,
  ensureAdmin,
  gidOverlapsOf,
  openControlStore,
  resolveShareAccess,
  SHARE_SETTINGS_DEFAULTS,
  type ControlSnapshot,
  type ControlStore,
} from './control/index.js';
import { ensureJwtSecret } from './control/auth.js';
import { controlLayout } from './control/embedded.js';
import { desiredFromConfig } from './control/seed.js';
import type { ReadinessCheck } from './api/index.js';
import type { StoreKind } from './control/types.js';
import type { DesiredShares, ShareRuntime } from './shares.js';
import { blockStoreFor, metadataStoreFor } from './stores.js';
import type { FileService } from './vfs/service.js';
import { withTimeout } from './timeouts.js';

/** The stores and shares of the config file, as the share runtime takes them (API off). */
export function desiredFromFile(config: DittoConfig): DesiredShares {
  return { metadataStores: config.metadata.stores, blockStores: config.blocks.stores, shares: config.shares };
}

/** The stores and shares of a control snapshot, as the share runtime takes them. */
export function desiredFromSnapshot(snap: ControlSnapshot): DesiredShares {
  const metadataStores: Record<string, MetadataStoreConfig> = {};
  for (const s of snap.metadata_stores) metadataStores[s.name] = { ...s.config, type: s.type };
  const blockStores: Record<string, BlockStoreConfig> = {};
  for (const s of snap.block_stores) blockStores[s.name] = { block_size: DEFAULT_BLOCK_SIZE, ...s.config, type: s.type };
  const shares: ShareConfig[] = snap.shares.map((s) => ({
    name: s.name,
    metadata: s.metadata_store,
    blocks: s.block_store,
    read_only: s.read_only,
    root_squash: s.root_squash,
    anonymous_uid: s.anonymous_uid,
    anonymous_gid: s.anonymous_gid,
    root_mode: s.root_mode,
    root_uid: s.root_uid,
    root_gid: s.root_gid,
  }));
  return { metadataStores, blockStores, shares };
}

export interface OpenedControlPlane {
  store: ControlStore;
  jwtSecret: string;
  snapshot: ControlSnapshot;
  /**
   * The first admin, when this start created it: the caller prints the generated password once the
   * server is up, or removes the user again when the start fails (so that the next start creates it
   * anew and prints a new password, instead of leaving an admin nobody knows the password of).
   */
  createdAdmin?: { username: string; generatedPassword?: string };
}

/**
 * Opens the control database, adds the config file's stores and shares whose names it lacks,
 * seeds the adapter rows on a first start, creates the first admin, and settles the token key.
 */
export async function openControlPlane(config: DittoConfig, log: Logger): Promise<OpenedControlPlane> {
  const db = config.database;
  const dbPath = path.resolve(db.path ?? path.join(config.data_dir, 'control'));
  const started = Date.now();
  const layout = db.type === 'embedded' ? controlLayout(dbPath) : 'sqlite';
  log.info(
    { phase: 'control database', database: db.type === 'embedded' ? dbPath : db.type },
    layout === 'empty'
      ? 'start-up: creating the control database (first start)'
      : layout === 'pglite'
        ? 'start-up: moving the control database from PGlite to SQLite (once; the PGlite files are kept as a backup)'
        : 'start-up: opening the control database (and applying its migrations)',
  );
  const store = await openControlStore({
    type: db.type,
    ...(db.type === 'embedded' ? { path: dbPath } : {}),
    ...(db.url !== undefined ? { url: db.url } : {}),
    ...(db.schema !== undefined ? { schema: db.schema } : {}),
    ...(db.pool_size !== undefined ? { poolSize: db.pool_size } : {}),
    logger: log.child({ component: 'control' }),
    // Two servers on one control database would each apply only their own changes, unless they
    // tell each other (coordination.redis: server.ts publishes every change).
    fence: config.coordination.redis.url === undefined,
  });
  let createdUser: string | undefined;
  try {
    const seeded = await seedFromConfig(store, config);
    // The adapter rows are the API's: the first start seeds them from the config file, later starts
    // leave them (servers sharing the database may listen on different ports; one start must not
    // move the others). Each start listens where its own config file says (adapters.ts).
    await store.ensureAdapters([
      { type: 'nfs', enabled: config.adapters.nfs.enabled, port: config.adapters.nfs.port },
      { type: 'smb', enabled: config.adapters.smb.enabled, port: config.adapters.smb.port },
    ]);
    const admin = await ensureAdmin(store, {
      ...(process.env.DITTOFS_ADMIN_INITIAL_PASSWORD ? { initialPassword: process.env.DITTOFS_ADMIN_INITIAL_PASSWORD } : {}),
      bcryptCost: config.server.api.bcrypt_cost,
    });
    if (admin.created) {
      createdUser = admin.username;
      log.info({ user: admin.username, generated: admin.generatedPassword !== undefined }, 'first start: admin user created');
    }
    const jwtSecret = config.server.api.jwt_secret ?? (await ensureJwtSecret(store));
    const snapshot = await store.snapshot();
    for (const o of gidOverlapsOf(snapshot)) {
      log.warn(
        o,
        `user ${JSON.stringify(o.user)}'s primary gid ${o.gid} is the gid of group ${JSON.stringify(o.group)}, which the user is not a member of: ` +
          `NFS clients sending the user's own ids get the group's share grants; give the group another gid or add the user to it`,
      );
    }
    log.info(
      {
        database: db.type === 'postgres' ? 'postgres' : db.type === 'memory' ? 'memory' : dbPath,
        generation: snapshot.generation,
        shares: snapshot.shares.length,
        users: snapshot.users.length,
        seeded,
        ms: Date.now() - started,
        phase: 'control database',
      },
      `start-up: control plane opened in ${seconds(Date.now() - started)}`,
    );
    const createdAdmin = admin.created
      ? { username: admin.username, ...(admin.generatedPassword === undefined ? {} : { generatedPassword: admin.generatedPassword }) }
      : undefined;
    return { store, jwtSecret, snapshot, ...(createdAdmin === undefined ? {} : { createdAdmin }) };
  } catch (err) {
    // Not half a first start: an admin created here is taken back with the rest of the failure.
    if (createdUser !== undefined) await store.deleteUser(createdUser).catch(() => undefined);
    await store.close().catch(() => undefined);
    throw err;
  }
}

/** A duration for start-up lines: "0.4 s", "12.0 s". */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Adds the config file's stores and shares that the database does not have, in one transaction. */
async function seedFromConfig(store: ControlStore, config: DittoConfig): Promise<string[]> {
  const desired = desiredFromConfig(config);
  return store.mutate(
    async (q) => {
      const added: string[] = [];
      for (const s of desired.metadata_stores) {
        if (await q.getStore('metadata', s.name)) continue;
        await q.createStore('metadata', { name: s.name, type: s.type as MetadataStoreConfig['type'], config: s.config ?? {} });
        added.push(`metadata store ${s.name}`);
      }
      for (const s of desired.block_stores) {
        if (await q.getStore('block', s.name)) continue;
        await q.createStore('block', { name: s.name, type: s.type as BlockStoreConfig['type'], config: s.config ?? {} });
        added.push(`block store ${s.name}`);
      }
      for (const s of desired.shares) {
        if (await q.getShare(s.name)) continue;
        await q.createShare({ ...SHARE_SETTINGS_DEFAULTS, ...s, metadata_store: s.metadata_store, block_store: s.block_store });
        added.push(`share ${s.name}`);
      }
      return added;
    },
    { changed: (added) => added.length > 0 },
  );
}

export interface ControlApplier {
  /** Applies the control database's current state (serialized; changes during a run coalesce). */
  schedule(): void;
  /** Resolves when every change seen so far is applied. */
  settled(): Promise<void>;
  /** The generation of the snapshot applied last (-1: none yet). */
  readonly appliedGeneration: number;
  /**
   * Applies until this server runs `generation` or a newer one (another server's change may not
   * have been heard of yet); bounded by a few rounds. True when it does.
   */
  applyUpTo(generation: number): Promise<boolean>;
}

/**
 * Applies snapshots: shares through `applyShares`, permissions as the file service's access policy,
 * settings (logging.level). Runs one at a time; changes that arrive meanwhile are applied once after.
 */
export function controlApplier(
  store: ControlStore,
  fileService: FileService,
  applyShares: (snap: ControlSnapshot) => Promise<void>,
  setLogLevel: (level: LogLevel) => void,
  log: Logger,
  /** Told each generation applied (several servers: reported in Redis, coord/control.ts). */
  onApplied: (generation: number) => void = () => undefined,
): ControlApplier & { applySnapshot(snap: ControlSnapshot): Promise<void> } {
  let running: Promise<void> | null = null;
  let again = false;
  let applied = -1;
  const applySnapshot = async (snap: ControlSnapshot): Promise<void> => {
    const index = buildAccessIndex(snap);
    fileService.setAccessPolicy((share, id) => resolveShareAccess(index, share, id));
    const level = snap.settings['logging.level'];
    if (typeof level === 'string' && (LOG_LEVELS as readonly string[]).includes(level) && level !== log.level)
      setLogLevel(level as LogLevel);
    await applyShares(snap);
    if (snap.generation > applied) {
      applied = snap.generation;
      onApplied(applied);
    }
  };
  const run = async (): Promise<void> => {
    do {
      again = false;
      try {
        await applySnapshot(await store.snapshot());
      } catch (err) {
        log.error({ err }, 'could not apply a control-plane change; it is applied with the next one');
      }
    } while (again);
  };
  const schedule = (): void => {
    if (running) {
      again = true;
      return;
    }
    running = run().finally(() => {
      running = null;
    });
  };
  const settled = async (): Promise<void> => {
    while (running) await running;
  };
  return {
    applySnapshot,
    schedule,
    settled,
    get appliedGeneration() {
      return applied;
    },
    async applyUpTo(generation) {
      // A failed apply is retried with the next change; three rounds is enough for changes racing this one.
      for (let round = 0; round < 3 && applied < generation; round++) {
        schedule();
        await settled();
      }
      return applied >= generation;
    },
  };
}

/** Probes every open store every few seconds, for GET /health/ready. */
export class StoreHealth {
  private readonly results = new Map<string, ReadinessCheck>();
  private readonly timer: NodeJS.Timeout;
  private running = false;

  constructor(
    private readonly shares: ShareRuntime,
    private readonly log: Logger,
    intervalMs = 5000,
  ) {
    this.timer = setInterval(() => void this.probe(), intervalMs);
    this.timer.unref();
    void this.probe();
  }

  private async probe(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const { metadata, blocks } = this.shares.openStores();
      const seen = new Set<string>();
      const check = async (key: string, fn: () => Promise<unknown>): Promise<void> => {
        seen.add(key);
        const before = this.results.get(key);
        try {
          await withTimeout(fn(), PROBE_TIMEOUT_MS);
          this.results.set(key, { ok: true });
          if (before && !before.ok) this.log.info({ store: key }, 'store reachable again');
        } catch (err) {
          // Shown by the unauthenticated /health/ready and logged: a driver's message may quote the URL.
          const detail = redactSecrets((err as Error).message);
          this.results.set(key, { ok: false, detail });
          if (!before || before.ok) this.log.warn({ store: key, err: detail }, 'store unreachable');
        }
      };
      await Promise.all([
        ...metadata.map(([name, s]) => check(`metadata:${name}`, () => s.getInode(0))),
        ...blocks.map(([name, s]) => check(`blocks:${name}`, () => s.get(PROBE_KEY))),
      ]);
      for (const k of [...this.results.keys()]) if (!seen.has(k)) this.results.delete(k);
    } finally {
      this.running = false;
    }
  }

  /** The probes' results, and metadata stores failed for good (see failures) as failing. */
  checks(): Record<string, ReadinessCheck> {
    const checks = Object.fromEntries(this.results);
    for (const [key, detail] of Object.entries(this.failures())) checks[key] = { ok: false, detail };
    return checks;
  }

  /**
   * Metadata stores that no longer vouch for what they answer until DittoFS restarts
   * (MetadataStore.failure: an fsync failed, or answered changes were lost in a crash of
   * PostgreSQL), by `metadata:NAME`, with why (secrets masked).
   */
  failures(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, s] of this.shares.openStores().metadata) {
      const failure = s.failure?.();
      if (failure) out[`metadata:${name}`] = redactSecrets(failure.message);
    }
    return out;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

const PROBE_TIMEOUT_MS = 5000;
/** A key no block is stored under: reading it costs one small request. */
const PROBE_KEY = 'dittofs-health-probe';

/**
 * How long checkStore waits for a store to open. Opening a new embedded store creates a database
 * (PGlite's initdb), which takes over 30 s on a machine at load 20: a busy machine is slow, not wrong.
 */
const CHECK_STORE_TIMEOUT_MS = 2 * 60_000;

/**
 * For the API: can a store with these settings work? Opens it and closes it. A filesystem or
 * embedded store without a `path` would live under the data directory by its name: it is probed in
 * a fresh directory there, removed afterwards, so that a probe neither leaves a store behind nor
 * opens one the server has open.
 */
export async function checkStore(kind: StoreKind, type: string, cfg: Record<string, unknown>, dataDir: string, log: Logger): Promise<void> {
  const o = { metrics: null, observe: false };
  const scratch = cfg.path === undefined && (type === 'filesystem' || type === 'embedded');
  if (scratch) await mkdir(dataDir, { recursive: true });
  const probeDir = scratch ? await mkdtemp(path.join(dataDir, '.store-check-')) : undefined;
  const probeCfg = probeDir !== undefined ? { ...cfg, path: probeDir } : cfg;
  try {
    const store =
      kind === 'metadata'
        ? metadataStoreFor('check', { ...probeCfg, type } as MetadataStoreConfig, dataDir, log, o, false)
        : blockStoreFor('check', { block_size: DEFAULT_BLOCK_SIZE, ...probeCfg, type } as BlockStoreConfig, dataDir, o);
    const opened = store.open();
    try {
      await withTimeout(opened, CHECK_STORE_TIMEOUT_MS);
    } catch (e) {
      // Still opening: close it whenever it does open, not to keep its files locked.
      void opened.then(
        () => store.close(),
        () => undefined,
      );
      throw e;
    }
    await store.close();
  } finally {
    if (probeDir !== undefined) await rm(probeDir, { recursive: true, force: true });
  }
}
