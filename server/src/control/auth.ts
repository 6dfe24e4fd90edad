// Passwords and tokens.
//
// Passwords: bcrypt (bcryptjs, cost >= 10) for the API, plus the NT hash (MD4 of the UTF-16LE
// password, hex) that SMB NTLM authentication needs; node's crypto has no MD4 under OpenSSL 3, so
// it comes from hash-wasm. Passwords are 8 characters to 72 UTF-8 bytes: bcrypt ignores anything
// past 72 bytes, and silently accepting a longer one would make its tail meaningless.
//
// Tokens: JWT, HS256 only (any other `alg`, `none` included, is refused before verification).
// Claims: sub (username), role, typ ('access' | 'refresh'), tv (the user's token version), iat, exp,
// iss. An access token lives 15 minutes, a refresh token 7 days. Changing a password or deleting a
// user bumps the token version (a sequence: a user created again under the same name gets a new
// one), so every token issued before stops working at once. Refreshing issues a new pair; the old
// refresh token stays valid until it expires (nothing is stored per token).
import { randomBytes } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { md4 } from 'hash-wasm';
import jwt from 'jsonwebtoken';
import { weakJwtSecret } from '../config/jwt-secret.js';
import type { ControlStore } from './store.js';
import { BOOTSTRAP_ADMIN, ROLES, type Role } from './types.js';

export const MIN_BCRYPT_COST = 10;
export const MAX_BCRYPT_COST = 15;
export const DEFAULT_BCRYPT_COST = 10;
export const MIN_JWT_SECRET_LENGTH = 32;
export const ACCESS_TOKEN_TTL_SECONDS = 15 * 60;
export const REFRESH_TOKEN_TTL_SECONDS = 7 * 24 * 3600;
export { MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH, passwordProblem } from './password-rules.js';
import { passwordProblem } from './password-rules.js';
/** The JSON schema bound; the byte bound is checked by passwordProblem(). */
export const MAX_PASSWORD_LENGTH = 72;
export const TOKEN_ISSUER = 'dittofs';
const JWT_ALGORITHM = 'HS256';

export const AUTH_ERROR = Object.freeze({
  INVALID_TOKEN: 'DITTOFS_AUTH_INVALID_TOKEN',
  EXPIRED_TOKEN: 'DITTOFS_AUTH_EXPIRED_TOKEN',
  WRONG_TOKEN_TYPE: 'DITTOFS_AUTH_WRONG_TOKEN_TYPE',
  BAD_CONFIG: 'DITTOFS_AUTH_BAD_CONFIG',
} as const);
export type AuthErrorCode = (typeof AUTH_ERROR)[keyof typeof AUTH_ERROR];

export class AuthError extends Error {
  override readonly name = 'AuthError';
  constructor(
    readonly code: AuthErrorCode,
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Passwords

export function checkBcryptCost(cost: number): number {
  if (!Number.isInteger(cost) || cost < MIN_BCRYPT_COST || cost > MAX_BCRYPT_COST) {
    throw new AuthError(AUTH_ERROR.BAD_CONFIG, `bcrypt cost must be an integer from ${MIN_BCRYPT_COST} to ${MAX_BCRYPT_COST}, got ${cost}`);
  }
  return cost;
}

export function hashPassword(password: string, cost = DEFAULT_BCRYPT_COST): Promise<string> {
  return bcrypt.hash(password, checkBcryptCost(cost));
}

/** Constant-time in the hash; false for a malformed hash. */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  try {
    return await bcrypt.compare(password, hash);
  } catch {
    return false;
  }
}

/** MS-NLMP 3.3.1 NTOWFv1: MD4(UNICODE(password)), as lower-case hex. */
export function ntHash(password: string): Promise<string> {
  return md4(Buffer.from(password, 'utf16le'));
}

export interface PasswordCredentials {
  password_hash: string;
  nt_hash: string;
}

export async function passwordCredentials(password: string, cost = DEFAULT_BCRYPT_COST): Promise<PasswordCredentials> {
  return { password_hash: await hashPassword(password, cost), nt_hash: await ntHash(password) };
}

/** 24 characters of base64url from 18 random bytes (144 bits). */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}

const dummyHashes = new Map<number, Promise<string>>();

/**
 * Spends about as long as checking a real password hashed at `cost` (the configured one, which
 * real hashes have): login answers as slowly for an unknown user as for a wrong password, so
 * timing does not reveal which usernames exist.
 */
export async function burnPasswordCheck(password: string, cost = DEFAULT_BCRYPT_COST): Promise<void> {
  let dummy = dummyHashes.get(cost);
  if (dummy === undefined) dummyHashes.set(cost, (dummy = hashPassword(generatePassword(), cost)));
  await verifyPassword(password, await dummy);
}

// ---------------------------------------------------------------------------------------------
// Tokens

export type TokenType = 'access' | 'refresh';

export interface TokenClaims {
  sub: string;
  role: Role;
  typ: TokenType;
  tv: number;
  iat: number;
  exp: number;
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  /** Seconds the access token is valid for. */
  expires_in: number;
}

export interface TokenServiceOptions {
  /** At least 32 characters; the same on every server behind one API address. */
  secret: string;
  accessTtlSeconds?: number;
  refreshTtlSeconds?: number;
}

export class TokenService {
  private readonly secret: string;
  readonly accessTtlSeconds: number;
  readonly refreshTtlSeconds: number;

  constructor(opts: TokenServiceOptions) {
    if (typeof opts.secret !== 'string' || opts.secret.length < MIN_JWT_SECRET_LENGTH) {
      throw new AuthError(
        AUTH_ERROR.BAD_CONFIG,
        `the JWT secret must be at least ${MIN_JWT_SECRET_LENGTH} characters long (got ${typeof opts.secret === 'string' ? opts.secret.length : 0}); ` +
          'generate one with: openssl rand -base64 48',
      );
    }
    const weak = weakJwtSecret(opts.secret);
    if (weak !== undefined)
      throw new AuthError(
        AUTH_ERROR.BAD_CONFIG,
        `the JWT secret must be a random key, and ${weak}; generate one with: openssl rand -base64 48`,
      );
    this.secret = opts.secret;
    this.accessTtlSeconds = opts.accessTtlSeconds ?? ACCESS_TOKEN_TTL_SECONDS;
    this.refreshTtlSeconds = opts.refreshTtlSeconds ?? REFRESH_TOKEN_TTL_SECONDS;
  }

  sign(user: { username: string; role: Role; token_version: number }, typ: TokenType, ttlSeconds?: number): string {
    const ttl = ttlSeconds ?? (typ === 'access' ? this.accessTtlSeconds : this.refreshTtlSeconds);
    return jwt.sign({ role: user.role, typ, tv: user.token_version }, this.secret, {
      algorithm: JWT_ALGORITHM,
      expiresIn: ttl,
      subject: user.username,
      issuer: TOKEN_ISSUER,
    });
  }

  issue(user: { username: string; role: Role; token_version: number }): TokenPair {
    return {
      access_token: this.sign(user, 'access'),
      refresh_token: this.sign(user, 'refresh'),
      token_type: 'Bearer',
      expires_in: this.accessTtlSeconds,
    };
  }

  /** Checks signature, algorithm, expiry, issuer and type; throws AuthError. */
  verify(token: string, typ: TokenType): TokenClaims {
    const header = jwt.decode(token, { complete: true })?.header;
    if (header === undefined || header.alg !== JWT_ALGORITHM) throw new AuthError(AUTH_ERROR.INVALID_TOKEN, 'invalid token');
    let payload: string | jwt.JwtPayload;
    try {
      payload = jwt.verify(token, this.secret, { algorithms: [JWT_ALGORITHM], issuer: TOKEN_ISSUER });
    } catch (e) {
      if (e instanceof jwt.TokenExpiredError) throw new AuthError(AUTH_ERROR.EXPIRED_TOKEN, 'token expired');
      throw new AuthError(AUTH_ERROR.INVALID_TOKEN, 'invalid token');
    }
    if (typeof payload !== 'object') throw new AuthError(AUTH_ERROR.INVALID_TOKEN, 'invalid token');
    const { sub, role, typ: t, tv, iat, exp } = payload as Record<string, unknown>;
    if (
      typeof sub !== 'string' ||
      typeof role !== 'string' ||
      !(ROLES as readonly string[]).includes(role) ||
      typeof tv !== 'number' ||
      typeof iat !== 'number' ||
      typeof exp !== 'number'
    ) {
      throw new AuthError(AUTH_ERROR.INVALID_TOKEN, 'invalid token');
    }
    if (t !== typ) throw new AuthError(AUTH_ERROR.WRONG_TOKEN_TYPE, `expected an ${typ} token`);
    return { sub, role: role as Role, typ, tv, iat, exp };
  }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

/**
 * The JWT key to use when the config gives none: generated once (48 random bytes) and kept in the
 * control database, so tokens survive a restart and every server on one database agrees.
 */
export async function ensureJwtSecret(store: ControlStore): Promise<string> {
  const candidate = randomBytes(48).toString('base64url');
  return (await store.mutate((q) => q.secret('jwt', candidate), { changed: (r) => r.created })).value;
}

export interface EnsureAdminOptions {
  /** The admin's first password (from DITTOFS_ADMIN_INITIAL_PASSWORD); absent: one is generated. */
  initialPassword?: string;
  /** Default: the first automatic uid (10000): not 0, which NFS clients use for root. */
  uid?: number;
  bcryptCost?: number;
}

export interface EnsureAdminResult {
  /** False when users existed already: nothing was done. */
  created: boolean;
  username: string;
  /**
   * Set only when the password was generated: the caller prints it once (never log it). The
   * admin must change it at first login either way.
   */
  generatedPassword?: string;
}

/**
 * On first start (no users at all), creates `admin` with role admin and must_change_password set.
 * Safe with several servers on one database: the check and the insert are one change.
 */
export async function ensureAdmin(store: ControlStore, opts: EnsureAdminOptions = {}): Promise<EnsureAdminResult> {
  if ((await store.read((q) => q.countUsers())) > 0) return { created: false, username: BOOTSTRAP_ADMIN };
  const given = opts.initialPassword !== undefined && opts.initialPassword !== '';
  const password = given ? opts.initialPassword! : generatePassword();
  if (given) {
    const problem = passwordProblem(password);
    if (problem !== undefined) throw new AuthError(AUTH_ERROR.BAD_CONFIG, `the initial admin password ${problem}`);
  }
  const creds = await passwordCredentials(password, opts.bcryptCost ?? DEFAULT_BCRYPT_COST);
  const created = await store.mutate(
    async (q) => {
      if ((await q.countUsers()) > 0) return false;
      await q.createUser({
        username: BOOTSTRAP_ADMIN,
        role: 'admin',
        must_change_password: true,
        ...creds,
        ...(opts.uid === undefined ? {} : { uid: opts.uid }),
      });
      return true;
    },
    { changed: (c) => c },
  );
  return created && !given ? { created, username: BOOTSTRAP_ADMIN, generatedPassword: password } : { created, username: BOOTSTRAP_ADMIN };
}
