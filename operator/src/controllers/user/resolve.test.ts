import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { User } from '../../api/types.js';
import { resolveUser } from './resolve.js';

const user = (spec: Partial<User['spec']>): User => ({ metadata: { name: 'u' }, spec: { dittofs: 'main', username: 'alice', ...spec } });
const secretOf = (value: string | undefined) => () =>
  value === undefined ? ({ ok: false, reason: 'SecretNotFound', message: 'no Secret' } as const) : ({ ok: true, value } as const);

describe('resolveUser', () => {
  it('username, ids, role and groups; the password from the Secret without a trailing newline', () => {
    const r = resolveUser(
      user({
        uid: 1000,
        gid: 100,
        groups: ['b', 'a', 'b'],
        role: 'operator',
        email: 'a@x.org',
        passwordSecretRef: { name: 's', key: 'p' },
      }),
      secretOf('s3cret-pass\n'),
    );
    assert.ok(r.ok);
    assert.deepEqual(r.value, {
      item: { username: 'alice', password: 's3cret-pass', uid: 1000, gid: 100, email: 'a@x.org', role: 'operator' },
      groups: ['a', 'b'],
    });
  });

  it('no password reference: an identity that cannot log in (no password sent)', () => {
    const r = resolveUser(user({}), secretOf(undefined));
    assert.ok(r.ok && r.value.item.password === undefined && r.value.item.role === 'user');
  });

  it('a missing Secret or a password the server would refuse', () => {
    const ref = { passwordSecretRef: { name: 's', key: 'p' } };
    assert.deepEqual(resolveUser(user(ref), secretOf(undefined)), { ok: false, reason: 'SecretNotFound', message: 'no Secret' });
    const short = resolveUser(user(ref), secretOf('short'));
    assert.ok(!short.ok && short.reason === 'InvalidPassword');
    const long = resolveUser(user(ref), secretOf('é'.repeat(40)));
    assert.ok(!long.ok && long.reason === 'InvalidPassword', '80 bytes in UTF-8');
    assert.ok(!resolveUser(user({ username: 'admin' }), secretOf(undefined)).ok);
    const mail = resolveUser(user({ email: 'not-an-address' }), secretOf(undefined));
    assert.ok(!mail.ok && /not an email address/.test(mail.message), 'the server would refuse it without naming the user');
  });
});
