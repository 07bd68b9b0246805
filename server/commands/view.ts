import type { CommandView } from '../contract/schemas';
import type { Command } from '../storage';

/** A stored command as browsers and scripts see it (without its internal bookkeeping). */
export function commandView(c: Command): CommandView {
  return {
    id: c.id,
    deviceId: c.deviceId,
    action: c.action,
    params: c.params,
    status: c.status,
    result: c.result,
    error: c.error,
    createdAt: c.createdAt,
    updatedAt: c.updatedAt,
    sentBy: c.sentBy,
  };
}
