// Rate-limit keys and the stricter limits on credential checks (login, password change).
import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { App, RateLimitRule } from './context.js';
import { ApiProblem } from './problem.js';

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

/**
 * An onRequest hook: credential checks counted per client address, whatever the username, on top
 * of credentialsRateLimit (a route's own rate limit replaces the global one, so without this one
 * address cycling usernames would get unlimited bcrypt work and password guesses). The plugin's
 * `rateLimit()` hook would not do: only the first of its hooks runs per request.
 */
export function credentialsAddressLimit(app: App, rule: RateLimitRule) {
  const check = app.createRateLimit({ max: rule.max, timeWindow: rule.timeWindowMs, keyGenerator: (req) => `cred-ip:${req.ip}` });
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const r = await check(req);
    if (r.isAllowed || !r.isExceeded) return;
    void reply.header('retry-after', r.ttlInSeconds);
    throw new ApiProblem('rate-limited', `too many requests; retry in ${r.ttlInSeconds} seconds`);
  };
}
