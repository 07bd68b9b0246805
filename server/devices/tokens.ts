import crypto from 'node:crypto';

/**
 * Device tokens are 32 random bytes, so a fast SHA-256 is enough to store them safely (unlike
 * passwords, they cannot be guessed from a dictionary); it keeps 19,000 reconnecting devices cheap.
 */
export function newDeviceToken(): string {
  return crypto.randomBytes(32).toString('base64url');
}

export function hashToken(token: string): string {
  return 'sha256:' + crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

export function tokenMatches(token: string, stored: string): boolean {
  const a = Buffer.from(hashToken(token));
  const b = Buffer.from(stored);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}
