import crypto from 'node:crypto';
import { roleAtLeast } from '../auth/session';
import { InputError } from '../devices/admin';
import { ApiKey, DuplicateError, Role, ROLES, Storage, User } from '../storage';

/** Every key starts with this, so a key pasted into a URL or a log is recognisable (docs/api.md). */
export const KEY_PREFIX = 'spk_';
export const KEY_NAME_MAX = 100;

/**
 * Keys are 32 random bytes, so (as for device tokens) a fast SHA-256 stores them safely; a slow
 * password hash would cost every API request a bcrypt round.
 */
export function hashApiKey(key: string): string {
  return 'sha256:' + crypto.createHash('sha256').update(key, 'utf8').digest('hex');
}

export function lowerRole(a: Role, b: Role): Role {
  return roleAtLeast(a, b) ? b : a;
}

/** Thrown when a key would have more power than its user. */
export class RoleTooHighError extends InputError {}

/** Makes a key for `user`; the key itself is returned once and only its hash is kept. */
export async function createApiKey(storage: Storage, user: User, name: string, role: string): Promise<{ apiKey: ApiKey; key: string }> {
  const clean = name.trim();
  if (clean.length === 0 || clean.length > KEY_NAME_MAX) throw new InputError(`A key name must be 1-${KEY_NAME_MAX} characters.`);
  if (!(ROLES as readonly string[]).includes(role)) throw new InputError(`Role must be one of ${ROLES.join(', ')}.`);
  if (!roleAtLeast(user.role, role as Role)) {
    throw new RoleTooHighError(`A key can have at most the role of its user (${user.username} is ${user.role}).`);
  }
  for (;;) {
    const key = KEY_PREFIX + crypto.randomBytes(32).toString('base64url');
    try {
      const apiKey = await storage.createApiKey({ id: crypto.randomBytes(6).toString('hex'), userId: user.id, name: clean, role: role as Role, keyHash: hashApiKey(key) });
      return { apiKey, key };
    } catch (err) {
      // An id collision (48 random bits) is next to impossible; try another rather than fail.
      if (!(err instanceof DuplicateError)) throw err;
    }
  }
}

/** Who a request acts as once its key is checked. */
export interface KeyCaller {
  apiKey: ApiKey;
  user: User;
  /** The key's role, lowered to its user's current role. */
  role: Role;
}

/** How often a key's last-used time is written (at most), so busy keys do not write on every request. */
const TOUCH_EVERY_MS = 60_000;

/**
 * Checks a key against storage on every request: a revoked key, or one whose user was removed,
 * fails at once, and a demoted user's key acts with the lower role from the next request on.
 */
export async function authenticateKey(storage: Storage, key: string, now = Date.now()): Promise<KeyCaller | { problem: string }> {
  if (!key.startsWith(KEY_PREFIX) || key.length > 200) return { problem: 'That is not a sockpit API key.' };
  const apiKey = await storage.getApiKeyByHash(hashApiKey(key));
  if (!apiKey) return { problem: 'Unknown or revoked API key.' };
  const user = await storage.getUserById(apiKey.userId);
  if (!user) return { problem: "This key's user no longer exists." };
  if (apiKey.lastUsedAt === null || now - apiKey.lastUsedAt >= TOUCH_EVERY_MS) {
    await storage.touchApiKey(apiKey.id, now);
    apiKey.lastUsedAt = now;
  }
  return { apiKey, user, role: lowerRole(apiKey.role, user.role) };
}

/** Keys `user` may see: their own, or everyone's for an admin. */
export function visibleKeys(storage: Storage, user: User, role: Role): Promise<ApiKey[]> {
  return role === 'admin' ? storage.listApiKeys() : storage.listApiKeys(user.id);
}

/** Revokes a key its owner (or an admin) names; false when there is no such key for them. */
export async function revokeApiKey(storage: Storage, id: string, by: { user: User; role: Role } | 'cli'): Promise<boolean> {
  const apiKey = await storage.getApiKey(id);
  if (!apiKey) return false;
  if (by !== 'cli' && by.role !== 'admin' && apiKey.userId !== by.user.id) return false;
  return storage.deleteApiKey(id);
}
