// A Share resource -> the share item of the server's desired state: its export path, its two
// stores by their names inside DittoFS, its settings and its grants.
import type { Share, StoreKind } from '../../api/types.js';
import { MAX_GRANTS_PER_SHARE, type DesiredShare, type PermissionGrant } from '../../dittofs-api/types.js';
import type { Resolution } from '../member.js';

export interface ShareContext {
  /** The name inside DittoFS of the store a Share names (a Store resource's name or storeName), or why it is unusable. */
  store(kind: StoreKind, ref: string): Resolution<string>;
  /** Whether a user of this name is in the desired state (grants may only name those). */
  userExists(username: string): boolean;
}

/** "0755" / "755" -> 0o755. */
export function parseMode(mode: string): number | undefined {
  return /^0?[0-7]{3,4}$/.test(mode) ? parseInt(mode, 8) : undefined;
}

export function resolveShare(share: Share, ctx: ShareContext): Resolution<DesiredShare> {
  const s = share.spec;
  const meta = ctx.store('metadata', s.metadataStore);
  if (!meta.ok) return meta;
  const block = ctx.store('block', s.blockStore);
  if (!block.ok) return block;
  if ((s.permissions?.length ?? 0) > MAX_GRANTS_PER_SHARE) {
    return { ok: false, reason: 'InvalidSpec', message: `at most ${MAX_GRANTS_PER_SHARE} permissions per share` };
  }
  const grants: PermissionGrant[] = [];
  const seen = new Set<string>();
  for (const p of s.permissions ?? []) {
    if ((p.user === undefined) === (p.group === undefined)) {
      return { ok: false, reason: 'InvalidSpec', message: 'a permission names exactly one of user or group' };
    }
    const who = p.user !== undefined ? `user ${p.user}` : `group ${p.group!}`;
    if (seen.has(who)) return { ok: false, reason: 'InvalidSpec', message: `permissions: ${who} is listed more than once` };
    seen.add(who);
    if (p.user !== undefined) {
      if (!ctx.userExists(p.user)) {
        return {
          ok: false,
          reason: 'UserNotFound',
          message: `permissions: no User with username ${JSON.stringify(p.user)} of this DittoFS is ready`,
        };
      }
      grants.push({ user: p.user, level: p.level });
    } else {
      grants.push({ group: p.group!, level: p.level });
    }
  }
  let rootMode: number | undefined;
  if (s.rootMode !== undefined) {
    rootMode = parseMode(s.rootMode);
    if (rootMode === undefined)
      return { ok: false, reason: 'InvalidSpec', message: `rootMode ${JSON.stringify(s.rootMode)} is not an octal mode` };
  }
  return {
    ok: true,
    value: {
      name: s.path,
      metadata_store: meta.value,
      block_store: block.value,
      read_only: s.readOnly ?? false,
      root_squash: s.rootSquash ?? false,
      default_permission: s.defaultPermission ?? 'read-write',
      ...(rootMode === undefined ? {} : { root_mode: rootMode }),
      permissions: grants,
    },
  };
}

/** The group names a share's grants use (the desired state must define them). */
export function grantGroups(share: DesiredShare): string[] {
  return (share.permissions ?? []).flatMap((g) => (g.group === undefined ? [] : [g.group]));
}
