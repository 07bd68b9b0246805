import { DuplicateError, LastAdminError, Role, ROLES, Storage, User } from '../storage';
import { InputError } from '../devices/admin';
import { hashPassword, passwordProblem, usernameProblem } from './passwords';

export { InputError };

export function parseRole(role: string): Role {
  if (!(ROLES as readonly string[]).includes(role)) throw new InputError(`Role must be one of ${ROLES.join(', ')}.`);
  return role as Role;
}

export async function addUser(storage: Storage, username: string, password: string, role: string, rounds: number): Promise<User> {
  const problem = usernameProblem(username) ?? passwordProblem(password);
  if (problem) throw new InputError(problem);
  const r = parseRole(role);
  try {
    return (await storage.createUser({ username, passwordHash: await hashPassword(password, rounds), role: r }))!;
  } catch (err) {
    if (err instanceof DuplicateError) throw new InputError(`A user "${username}" already exists.`);
    throw err;
  }
}

async function mustGet(storage: Storage, username: string): Promise<User> {
  const u = await storage.getUserByName(username);
  if (!u) throw new InputError(`No user "${username}".`);
  return u;
}

/** Runs a role change or removal that storage refuses when it would leave the system without an admin. */
async function keepingAnAdmin(change: Promise<boolean>): Promise<void> {
  try {
    await change;
  } catch (err) {
    if (err instanceof LastAdminError) throw new InputError('sockpit needs at least one admin; make another user admin first.');
    throw err;
  }
}

export async function setRole(storage: Storage, user: User, role: string): Promise<void> {
  const r = parseRole(role);
  await keepingAnAdmin(storage.setUserRole(user.id, r, true));
}

export async function removeUser(storage: Storage, user: User): Promise<void> {
  await keepingAnAdmin(storage.deleteUser(user.id, true));
}

export async function setPassword(storage: Storage, username: string, password: string, rounds: number): Promise<void> {
  const problem = passwordProblem(password);
  if (problem) throw new InputError(problem);
  const u = await mustGet(storage, username);
  await storage.setUserPassword(u.id, await hashPassword(password, rounds));
}

export { mustGet as getUserOrFail };
