// Reconciles one DittoFS: read it, compute its children (desired.ts), apply them with server-side
// apply, create the once-generated Secrets if missing, and report status. Runs serialized per
// DittoFS (runtime/workqueue.ts); the children's own events bring it back (operator.ts).
import type { V1Secret, V1StatefulSet } from '@kubernetes/client-node';
import { splitKey, type DittoFS, type KubeObject, type Quantity } from '../../api/types.js';
import { isAlreadyExists, type KubeClient } from '../../kube/client.js';
import { mergePatchDiff } from '../../kube/patch.js';
import { parseQuantityBytes } from '../../kube/quantity.js';
import { lookupSecret, paths, type SecretObject } from '../../kube/resources.js';
import type { Logger } from '../../log.js';
import type { ReconcileResult } from '../../runtime/workqueue.js';
import {
  configHash,
  desiredConfigSecret,
  desiredServices,
  desiredStatefulSet,
  newAdminSecret,
  newJwtSecret,
  renderServerConfig,
  replicaPlan,
  SPEC_DEFAULTS,
} from './desired.js';
import { DATA_VOLUME, childNames } from './names.js';
import { childClaim, conflictMessage, onceSecretClaim } from './ownership.js';
import { dittofsStatus, type Problem } from './status.js';
import type { EventRecorder, Regarding } from '../../kube/events.js';
import type { Redactor, SecretValues } from '../../kube/redact.js';

export interface DittoFSReconcilerDeps {
  client: KubeClient;
  log: Logger;
  defaultImage: string;
  clusterDomain: string;
  /** Called after every reconcile of an existing DittoFS (the state sync of its members follows it). */
  afterReconcile?: (key: string) => void;
  /** Records an Event for each status change (kube/events.ts); none when absent. */
  events?: EventRecorder;
  /** Every Secret value read is remembered here; statuses are written through it (kube/redact.ts). */
  secrets: SecretValues;
}

/** How long to wait before looking again at a DittoFS whose Secret reference does not resolve. */
const MISSING_REFERENCE_RECHECK_MS = 60_000;

export function dittofsReconciler(deps: DittoFSReconcilerDeps): (key: string) => Promise<ReconcileResult> {
  const { client } = deps;
  return async (key) => {
    const { namespace, name } = splitKey(key);
    const dfs = await client.get<DittoFS>(paths.custom('DittoFS', namespace, name));
    if (dfs === undefined || dfs.metadata.deletionTimestamp !== undefined) {
      // Gone or going: the garbage collector removes the children through their owner references.
      deps.afterReconcile?.(key);
      return {};
    }
    const log = deps.log.child({ dittofs: key });
    const names = childNames(name);
    let problem: Problem | undefined;
    const warnings: Problem[] = [];

    // The PostgreSQL URL, when the database is external.
    let databaseUrl: string | undefined;
    const pgRef = dfs.spec.database?.postgres?.urlSecretRef;
    if ((dfs.spec.database?.type ?? 'embedded') === 'postgres' && pgRef !== undefined) {
      const secret = await client.get<SecretObject>(paths.secrets(namespace, pgRef.name));
      const r = lookupSecret(secret, pgRef, 'database.postgres.urlSecretRef');
      if (r.ok) {
        databaseUrl = r.value;
        deps.secrets.remember(namespace, pgRef.name, pgRef.key, r.value);
      } else problem = { reason: r.reason, message: r.message };
    }
    // More than one pod without a PostgreSQL database and a Redis to coordinate them: one, and Ready=False.
    const plan = replicaPlan(dfs);
    if (plan.limited !== undefined)
      log.warn('replicas limited', { asked: dfs.spec.replicas, running: plan.replicas, reason: plan.limited.reason });

    // Children are only applied over objects that are this DittoFS's (ownership.ts): a name that is
    // taken by someone else's object leaves everything untouched, and says which object is in the way.
    const existing = await client.get<V1StatefulSet & KubeObject>(paths.statefulSets(namespace, names.statefulSet));
    const inTheWay: string[] = [];
    const check = (kind: string, obj: KubeObject | undefined, claim: typeof onceSecretClaim = childClaim): void => {
      if (obj !== undefined && claim(obj, dfs) === 'foreign') inTheWay.push(conflictMessage(kind, obj));
    };
    check('Secret', await client.get<SecretObject>(paths.secrets(namespace, names.configSecret)));
    // A user may provide these two (used as they are): only another object's are in the way.
    check('Secret', await client.get<SecretObject>(paths.secrets(namespace, names.jwtSecret)), onceSecretClaim);
    check('Secret', await client.get<SecretObject>(paths.secrets(namespace, names.adminSecret)), onceSecretClaim);
    check('Service', await client.get<KubeObject>(paths.services(namespace, names.headlessService)));
    check('Service', await client.get<KubeObject>(paths.services(namespace, names.clientService)));
    check('StatefulSet', existing);
    if (inTheWay.length > 0) {
      problem = {
        reason: 'NameConflict',
        message: `${inTheWay.join('; ')}: not touched; rename the DittoFS or remove ${inTheWay.length === 1 ? 'that object' : 'those objects'}`,
      };
      log.warn('children not applied: their names are taken', { objects: inTheWay });
    } else {
      for (const desired of [newJwtSecret(dfs), newAdminSecret(dfs)]) {
        const conflict = await ensureOnceSecret(client, desired, dfs);
        if (conflict !== undefined) problem = { reason: 'NameConflict', message: `${conflict}: not touched` };
      }
    }
    const ours = existing !== undefined && childClaim(existing, dfs) !== 'foreign' ? existing : undefined;

    // A StatefulSet's volume claim templates cannot change: keep the size and class it has.
    const wanted: Quantity = dfs.spec.cache?.size ?? SPEC_DEFAULTS.cacheSize;
    let cacheSize = wanted;
    const template = ours?.spec?.volumeClaimTemplates?.find((t) => t.metadata?.name === DATA_VOLUME);
    const have = template?.spec?.resources?.requests?.storage;
    if (have !== undefined && parseQuantityBytes(String(have)) !== parseQuantityBytes(wanted)) {
      cacheSize = String(have);
      warnings.push({
        reason: 'CacheSizeImmutable',
        message: `cache.size ${String(wanted)} differs from the ${String(have)} of the existing volume claims, which a StatefulSet cannot change: keeping ${String(have)} (expand the PVCs ${DATA_VOLUME}-${names.statefulSet}-N yourself if the storage class allows it)`,
      });
    }
    // The class too (the CRD refuses changing a class set, not setting one the DittoFS was made
    // without): applied, the new template would be refused at every reconcile, and every later
    // change of the DittoFS with it.
    const storageClass = template === undefined ? undefined : { name: template.spec?.storageClassName };
    const wantedClass = dfs.spec.cache?.storageClassName;
    if (storageClass !== undefined && storageClass.name !== wantedClass) {
      const kept = storageClass.name === undefined ? "the cluster's default class" : `class ${storageClass.name}`;
      warnings.push({
        reason: 'StorageClassImmutable',
        message: `cache.storageClassName ${wantedClass ?? '(unset)'} differs from the existing volume claims' ${kept}, which a StatefulSet cannot change: keeping it (to move, make a new DittoFS and copy the data)`,
      });
    }

    let sts: V1StatefulSet | undefined = ours;
    let hash: string | undefined;
    let applyError: Error | undefined;
    if (problem === undefined) {
      const inputs = {
        dfs,
        defaultImage: deps.defaultImage,
        cacheSize,
        ...(storageClass === undefined ? {} : { storageClass }),
        ...(databaseUrl === undefined ? {} : { databaseUrl }),
      };
      const rendered = renderServerConfig(inputs);
      hash = configHash(rendered);
      try {
        await client.apply(paths.secrets(namespace, names.configSecret), desiredConfigSecret(dfs, rendered));
        const [headless, clientSvc] = desiredServices(dfs);
        await client.apply(paths.services(namespace, names.headlessService), headless);
        await client.apply(paths.services(namespace, names.clientService), clientSvc);
        sts = await client.apply<V1StatefulSet>(paths.statefulSets(namespace, names.statefulSet), desiredStatefulSet(inputs, hash));
        log.debug('children applied', { configHash: hash });
      } catch (e) {
        applyError = e instanceof Error ? e : new Error(String(e));
        problem = { reason: 'ApplyFailed', message: applyError.message };
      }
    }

    const status = dittofsStatus({
      dfs,
      statefulSet: sts,
      ...(hash === undefined ? {} : { configHash: hash }),
      ...(problem === undefined ? {} : { problem }),
      ...(plan.limited === undefined ? {} : { replicasLimited: { ...plan.limited, replicas: plan.replicas } }),
      warnings,
      clusterDomain: deps.clusterDomain,
    });
    await writeStatus(
      client,
      paths.custom('DittoFS', namespace, name, 'status'),
      dfs.status,
      status,
      deps.secrets.forNamespace(namespace),
      deps.events && { recorder: deps.events, regarding: { kind: 'DittoFS', metadata: dfs.metadata } },
    );
    deps.afterReconcile?.(key);

    // Retried with backoff by the work queue; the status already says why.
    if (applyError !== undefined) throw applyError;
    return problem === undefined ? {} : { requeueAfterMs: MISSING_REFERENCE_RECHECK_MS };
  };
}

/**
 * Merge-patches a status subresource with what changed (nothing when nothing did), and records the
 * Events of the change. Every string of the new status goes through `redactor` first: no Secret
 * value reaches a status or an Event, whatever message quoted it.
 */
export async function writeStatus(
  client: KubeClient,
  statusPath: string,
  from: unknown,
  desired: unknown,
  redactor: Redactor,
  events?: { recorder: EventRecorder; regarding: Regarding },
): Promise<boolean> {
  const to = redactor.redactDeep(desired);
  const diff = mergePatchDiff(from ?? {}, to);
  if (diff === undefined) return false;
  await client.mergePatch(statusPath, { status: diff });
  if (events !== undefined) await events.recorder.statusChanged(events.regarding, from, to);
  return true;
}

/**
 * Creates a generated Secret if it does not exist, with no owner (it outlives the DittoFS, see
 * newAdminSecret). An existing one keeps every key it has (a password is never regenerated); only
 * keys it lacks are added. One the operator made for this DittoFS's name (labels managed-by and
 * instance: kept from a deleted DittoFS of that name, or restored from a backup) or a user made to
 * provide the credential (no controller) is used as it is; one an earlier version made with this
 * DittoFS as its owner loses that owner reference. One another object controls is not touched,
 * and the answer says so.
 */
export async function ensureOnceSecret(client: KubeClient, desired: V1Secret, dfs: DittoFS): Promise<string | undefined> {
  const namespace = dfs.metadata.namespace ?? '';
  const name = desired.metadata!.name!;
  let existing = await client.get<SecretObject>(paths.secrets(namespace, name));
  if (existing === undefined) {
    try {
      await client.create(paths.secrets(namespace), desired);
      return undefined;
    } catch (e) {
      if (!isAlreadyExists(e)) throw e;
      existing = await client.get<SecretObject>(paths.secrets(namespace, name));
      if (existing === undefined) throw e;
    }
  }
  const claim = onceSecretClaim(existing, dfs);
  if (claim === 'foreign') return conflictMessage('Secret', existing);
  const missing = Object.entries(desired.data ?? {}).filter(([k]) => existing.data?.[k] === undefined);
  const patch: { metadata: Record<string, unknown>; data?: Record<string, string> } = {
    metadata: { resourceVersion: existing.metadata.resourceVersion },
  };
  if (missing.length > 0) patch.data = Object.fromEntries(missing);
  // Made by an earlier version with the DittoFS as its owner: the owner reference goes, else
  // deleting the DittoFS would delete the credential its data still needs (newAdminSecret).
  if (claim === 'ours') {
    const others = (existing.metadata.ownerReferences ?? []).filter((o) => o.uid !== dfs.metadata.uid);
    patch.metadata.ownerReferences = others.length > 0 ? others : null;
  }
  if (patch.data === undefined && patch.metadata.ownerReferences === undefined) return undefined;
  await client.mergePatch(paths.secrets(namespace, name), patch);
  return undefined;
}
