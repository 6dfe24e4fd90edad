// Rate-limit keys and the stricter limit on credential checks (login, password change).
import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { RateLimitRule } from './context.js';

/** A short stable digest, so buckets do not hold tokens or usernames as they are. */
export const bucket = (...parts: string[]): string => createHash('sha256').update(parts.join('\0')).digest('base64url').slice(0, 22);

/** Route config: counted per client address and username, after the body is validated. */
export function credentialsRateLimit(rule: RateLimitRule, username: (req: FastifyRequest) => string) {
  return {
    max: rule.max,
    timeWindow: rule.timeWindowMs,
    hook: 'preHandler' as const,
    keyGenerator: (req: FastifyRequest) => `cred:${bucket(req.ip, username(req))}`,
  };
}
