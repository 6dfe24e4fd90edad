// A User resource -> the user item of the server's desired state, password read from its Secret.
import type { User } from '../../api/types.js';
import { ACCOUNT_NAME_RE, EMAIL_RE, MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH, type DesiredUser } from '../../dittofs-api/types.js';
import type { Resolution, SecretResolver } from '../member.js';

export interface ResolvedUser {
  item: DesiredUser;
  /** Supplementary groups (the server's groups, with this user as a member). */
  groups: string[];
}

export function resolveUser(user: User, secret: SecretResolver): Resolution<ResolvedUser> {
  const s = user.spec;
  const invalid = (message: string): Resolution<ResolvedUser> => ({ ok: false, reason: 'InvalidSpec', message });
  if (!ACCOUNT_NAME_RE.test(s.username)) return invalid(`username ${JSON.stringify(s.username)} is not a valid account name`);
  if (s.username === 'admin') return invalid("the admin user is the operator's own");
  for (const g of s.groups ?? []) if (!ACCOUNT_NAME_RE.test(g)) return invalid(`group ${JSON.stringify(g)} is not a valid group name`);
  if (s.email !== undefined && !EMAIL_RE.test(s.email)) return invalid(`email ${JSON.stringify(s.email)} is not an email address`);
  let password: string | undefined;
  if (s.passwordSecretRef !== undefined) {
    const r = secret(s.passwordSecretRef, 'passwordSecretRef');
    if (!r.ok) return { ok: false, reason: r.reason, message: r.message };
    // A trailing newline from `kubectl create secret --from-file` is not part of a password.
    password = r.value.replace(/\r?\n$/, '');
    if ([...password].length < MIN_PASSWORD_LENGTH || Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) {
      return {
        ok: false,
        reason: 'InvalidPassword',
        message: `the password in Secret ${JSON.stringify(s.passwordSecretRef.name)} must be ${MIN_PASSWORD_LENGTH} characters to ${MAX_PASSWORD_BYTES} bytes long`,
      };
    }
  }
  const item: DesiredUser = {
    username: s.username,
    ...(password === undefined ? {} : { password }),
    ...(s.uid === undefined ? {} : { uid: s.uid }),
    ...(s.gid === undefined ? {} : { gid: s.gid }),
    ...(s.email === undefined ? {} : { email: s.email }),
    role: s.role ?? 'user',
  };
  return { ok: true, value: { item, groups: [...new Set(s.groups ?? [])].sort() } };
}
