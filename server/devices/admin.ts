import { Device, DuplicateError, Storage } from '../storage';
import { DEVICE_ID_RE } from './messages';
import { hashToken, newDeviceToken } from './tokens';

export class InputError extends Error {}

export function deviceIdProblem(id: string): string | null {
  return DEVICE_ID_RE.test(id) ? null : 'Device id must be 1-64 characters: letters, digits, _ . : - (not only dots)';
}

/** Adds a device; the token is returned once and only its hash is kept. */
export async function addDevice(storage: Storage, id: string, name?: string): Promise<{ device: Device; token: string }> {
  const problem = deviceIdProblem(id);
  if (problem) throw new InputError(problem);
  const cleanName = (name ?? '').trim().slice(0, 100) || id;
  const token = newDeviceToken();
  try {
    const device = await storage.createDevice({ id, name: cleanName, tokenHash: hashToken(token) });
    return { device, token };
  } catch (err) {
    if (err instanceof DuplicateError) throw new InputError(`A device "${id}" already exists.`);
    throw err;
  }
}

/** Gives a device a new token; the old one stops working at once. */
export async function rotateDeviceToken(storage: Storage, id: string): Promise<string> {
  const token = newDeviceToken();
  if (!(await storage.setDeviceToken(id, hashToken(token)))) throw new InputError(`No device "${id}".`);
  return token;
}

export async function removeDevice(storage: Storage, id: string): Promise<void> {
  if (!(await storage.deleteDevice(id))) throw new InputError(`No device "${id}".`);
}
