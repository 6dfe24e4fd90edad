// What every route module gets, and the request augmentations the guard fills in.
import type { FastifyInstance } from 'fastify';
import type { TokenService } from '../control/auth.js';
import type { ControlStore } from '../control/store.js';
import type { Role } from '../control/types.js';
import type { ApiRuntime } from './runtime.js';

/**
 * Who may call a route: `public` (no token), `user` (any logged-in user), `operator` (admin or
 * operator), `admin`.
 */
export type Access = 'public' | 'user' | 'operator' | 'admin';

/** The authenticated caller of a request. */
export interface Principal {
  username: string;
  role: Role;
  must_change_password: boolean;
}

export interface RateLimitRule {
  max: number;
  timeWindowMs: number;
}

export interface ApiContext {
  store: ControlStore;
  tokens: TokenService;
  runtime: ApiRuntime;
  bcryptCost: number;
  /** For login and password changes: per client address and username. */
  credentialsLimit: RateLimitRule;
  /** For login and password changes together: per client address, whatever the username. */
  credentialsAddressLimit: RateLimitRule;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Default: admin (a route that forgets to say is closed, not open). */
    access?: Access;
    /** Callable while the caller must change their password (me, password change, refresh). */
    duringPasswordChange?: boolean;
  }
  interface FastifyRequest {
    principal: Principal | null;
  }
}

export type App = FastifyInstance;

/** May `p` manage a user with `role` (edit, delete, change group memberships)? An operator: only role user. */
export const mayManage = (p: Principal, role: Role): boolean => p.role === 'admin' || role === 'user';

/** The principal of a route whose access is not public (the guard has set it). */
export function principalOf(req: { principal: Principal | null }): Principal {
  if (req.principal === null) throw new Error('route without authentication asked for its principal');
  return req.principal;
}
