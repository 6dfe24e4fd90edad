// Passwords (bcrypt, NT hash) and tokens (HS256 only, typed, expiring).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import jwt from 'jsonwebtoken';
import { SAMPLE_JWT_SECRET } from '../config/jwt-secret.js';
import {
  AUTH_ERROR,
  AuthError,
  TokenService,
  checkBcryptCost,
  generatePassword,
  hashPassword,
  ntHash,
  passwordProblem,
  verifyPassword,
} from './auth.js';

const SECRET = 'a-test-secret-that-is-long-enough-0123456789';
const user = { username: 'alice', role: 'user' as const, token_version: 3 };

function authCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof AuthError, `expected AuthError, got ${String(e)}`);
    return e.code;
  }
  assert.fail('expected an AuthError');
}

describe('passwords', () => {
  it('bcrypt with cost 10 by default; the hash verifies only the same password', async () => {
    const h = await hashPassword('correct horse');
    assert.match(h, /^\$2[aby]\$10\$/);
    assert.equal(bcrypt.getRounds(h), 10);
    assert.equal(await verifyPassword('correct horse', h), true);
    assert.equal(await verifyPassword('correct horsE', h), false);
    assert.equal(await verifyPassword('correct horse', 'not a hash'), false);
  });

  it('refuses a bcrypt cost below 10', () => {
    assert.equal(checkBcryptCost(12), 12);
    assert.throws(() => checkBcryptCost(9), /bcrypt cost must be an integer from 10/);
    assert.throws(() => checkBcryptCost(10.5), /bcrypt cost/);
  });

  it('NT hash is MD4 of the UTF-16LE password (MS-NLMP test vectors)', async () => {
    assert.equal(await ntHash('password'), '8846f7eaee8fb117ad06bdd830b7586c');
    assert.equal(await ntHash(''), '31d6cfe0d16ae931b73c59d7e0c089c0');
    // MS-NLMP 4.2.2.1.2: NTOWFv1("Password")
    assert.equal(await ntHash('Password'), 'a4f49c406510bdcab6824ee7c30fd852');
  });

  it('passwordProblem: 8 characters to 72 bytes, no control characters; never quotes it', () => {
    assert.equal(passwordProblem('12345678'), undefined);
    assert.equal(passwordProblem('é'.repeat(36)), undefined); // 72 bytes
    assert.match(passwordProblem('1234567') ?? '', /at least 8/);
    assert.match(passwordProblem('é'.repeat(37)) ?? '', /at most 72 bytes/);
    assert.match(passwordProblem('abc\ndefgh') ?? '', /control/);
    assert.ok(!(passwordProblem('secret1') ?? '').includes('secret1'));
  });

  it('generated passwords are 24 base64url characters and differ', () => {
    const a = generatePassword();
    const b = generatePassword();
    assert.match(a, /^[A-Za-z0-9_-]{24}$/);
    assert.notEqual(a, b);
    assert.equal(passwordProblem(a), undefined);
  });
});

describe('tokens', () => {
  const tokens = new TokenService({ secret: SECRET });

  it('needs a secret of at least 32 characters', () => {
    assert.throws(
      () => new TokenService({ secret: 'short' }),
      (e: unknown) => e instanceof AuthError && e.code === AUTH_ERROR.BAD_CONFIG && /at least 32 characters/.test(e.message),
    );
    assert.throws(() => new TokenService({ secret: 'x'.repeat(31) }), /at least 32/);
    // Long enough, but guessable: the sample's example key, or one of few different characters.
    for (const secret of [SAMPLE_JWT_SECRET, 'x'.repeat(48), '0123'.repeat(10)])
      assert.throws(
        () => new TokenService({ secret }),
        (e: unknown) => e instanceof AuthError && e.code === AUTH_ERROR.BAD_CONFIG && /must be a random key/.test(e.message),
      );
  });

  it('issues an access/refresh pair that verifies with its claims', () => {
    const pair = tokens.issue(user);
    assert.equal(pair.token_type, 'Bearer');
    assert.equal(pair.expires_in, 900);
    const a = tokens.verify(pair.access_token, 'access');
    assert.deepEqual({ sub: a.sub, role: a.role, typ: a.typ, tv: a.tv }, { sub: 'alice', role: 'user', typ: 'access', tv: 3 });
    assert.equal(a.exp - a.iat, 900);
    const r = tokens.verify(pair.refresh_token, 'refresh');
    assert.equal(r.typ, 'refresh');
    assert.equal(r.exp - r.iat, 7 * 24 * 3600);
    assert.equal((jwt.decode(pair.access_token, { complete: true })?.header as { alg: string }).alg, 'HS256');
  });

  it('a refresh token is not an access token, and the other way round', () => {
    const pair = tokens.issue(user);
    assert.equal(
      authCode(() => tokens.verify(pair.refresh_token, 'access')),
      AUTH_ERROR.WRONG_TOKEN_TYPE,
    );
    assert.equal(
      authCode(() => tokens.verify(pair.access_token, 'refresh')),
      AUTH_ERROR.WRONG_TOKEN_TYPE,
    );
  });

  it('refuses expired tokens', () => {
    const t = tokens.sign(user, 'access', -10);
    assert.equal(
      authCode(() => tokens.verify(t, 'access')),
      AUTH_ERROR.EXPIRED_TOKEN,
    );
  });

  it('refuses a token signed with another secret', () => {
    const other = new TokenService({ secret: 'another-secret-that-is-long-enough-987654' });
    assert.equal(
      authCode(() => tokens.verify(other.issue(user).access_token, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
  });

  it('refuses alg none and other algorithms, even with the right secret', () => {
    const claims = { role: 'admin', typ: 'access', tv: 3 };
    const none = jwt.sign(claims, '', { algorithm: 'none', subject: 'alice', issuer: 'dittofs', expiresIn: 60 });
    assert.equal(
      authCode(() => tokens.verify(none, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
    const hs512 = jwt.sign(claims, SECRET, { algorithm: 'HS512', subject: 'alice', issuer: 'dittofs', expiresIn: 60 });
    assert.equal(
      authCode(() => tokens.verify(hs512, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
    // A hand-made token with a header saying none and an empty signature.
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const handmade = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, sub: 'alice', iss: 'dittofs', exp: Math.floor(Date.now() / 1000) + 60 })}.`;
    assert.equal(
      authCode(() => tokens.verify(handmade, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
  });

  it('refuses a token whose payload was changed', () => {
    const [h, , s] = tokens.issue(user).access_token.split('.');
    const forged = Buffer.from(
      JSON.stringify({ sub: 'alice', role: 'admin', typ: 'access', tv: 3, iss: 'dittofs', exp: 9e9, iat: 1 }),
    ).toString('base64url');
    assert.equal(
      authCode(() => tokens.verify(`${h}.${forged}.${s}`, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
  });

  it('refuses garbage, a token from another issuer, and one with missing claims', () => {
    for (const t of ['', 'x', 'a.b.c', 'Bearer abc']) {
      assert.equal(
        authCode(() => tokens.verify(t, 'access')),
        AUTH_ERROR.INVALID_TOKEN,
      );
    }
    const foreign = jwt.sign({ role: 'user', typ: 'access', tv: 3 }, SECRET, {
      algorithm: 'HS256',
      subject: 'alice',
      issuer: 'else',
      expiresIn: 60,
    });
    assert.equal(
      authCode(() => tokens.verify(foreign, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
    const noTv = jwt.sign({ role: 'user', typ: 'access' }, SECRET, {
      algorithm: 'HS256',
      subject: 'alice',
      issuer: 'dittofs',
      expiresIn: 60,
    });
    assert.equal(
      authCode(() => tokens.verify(noTv, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
    const badRole = jwt.sign({ role: 'root', typ: 'access', tv: 1 }, SECRET, {
      algorithm: 'HS256',
      subject: 'alice',
      issuer: 'dittofs',
      expiresIn: 60,
    });
    assert.equal(
      authCode(() => tokens.verify(badRole, 'access')),
      AUTH_ERROR.INVALID_TOKEN,
    );
  });
});
