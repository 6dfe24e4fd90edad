// What makes a configured API token key unfit, beyond its length: a key an attacker can guess signs
// admin tokens as well as the server does.

/** The example key the sample configuration (sample.ts, config/dittofs.example.yaml) shows, commented out. */
export const SAMPLE_JWT_SECRET = 'change-me-to-a-long-random-string-of-32+-chars';

/** Distinct characters a key must have at least (48 random bytes in base64 have about 40). */
const MIN_DISTINCT = 10;

/** Why `secret` (at least 32 characters) must not be used as the token key, or undefined. */
export function weakJwtSecret(secret: string): string | undefined {
  if (secret.trim().toLowerCase() === SAMPLE_JWT_SECRET) return 'it is the example value of the sample configuration';
  if (new Set(secret).size < MIN_DISTINCT) return `it has fewer than ${MIN_DISTINCT} different characters`;
  return undefined;
}
