import bcrypt from 'bcrypt';

/**
 * bcrypt only reads the first 72 bytes of a password. sockpit refuses longer passwords (at setup,
 * user add and passwd) instead of silently ignoring the rest.
 */
export const PASSWORD_MIN = 8;
export const PASSWORD_MAX_BYTES = 72;

export function passwordProblem(password: string): string | null {
  if (password.length < PASSWORD_MIN) return `Password must be at least ${PASSWORD_MIN} characters.`;
  if (Buffer.byteLength(password, 'utf8') > PASSWORD_MAX_BYTES) return `Password must be at most ${PASSWORD_MAX_BYTES} bytes.`;
  return null;
}

export const USERNAME_RE = /^[A-Za-z0-9_.@-]{1,64}$/;

export function usernameProblem(username: string): string | null {
  return USERNAME_RE.test(username) ? null : 'User name must be 1-64 characters: letters, digits, _ . @ -';
}

export function hashPassword(password: string, rounds: number): Promise<string> {
  return bcrypt.hash(password, rounds);
}

/** One dummy hash per cost factor, so that its compare costs what a real user's does. */
const dummies = new Map<number, Promise<string>>();

/**
 * Checks a password against a user's hash, or against a dummy hash when there is no such user,
 * so that both cases take about the same time (no user enumeration by timing).
 */
export async function verifyPassword(password: string, hash: string | null, rounds: number): Promise<boolean> {
  if (Buffer.byteLength(password, 'utf8') > PASSWORD_MAX_BYTES) {
    // Still spend the same time, on a truncated copy.
    password = Buffer.from(password, 'utf8').subarray(0, PASSWORD_MAX_BYTES).toString('latin1');
    hash = null;
  }
  if (hash === null) {
    let dummy = dummies.get(rounds);
    if (!dummy) dummies.set(rounds, (dummy = bcrypt.hash('sockpit-dummy-password', rounds)));
    await bcrypt.compare(password, await dummy);
    return false;
  }
  return bcrypt.compare(password, hash);
}
