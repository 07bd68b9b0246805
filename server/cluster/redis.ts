import type { Logger } from 'pino';
import type { ClusterParts } from '../app';
import type { Config } from '../config';
import type { Storage } from '../storage';

/** Multi-instance mode (REDIS_URL). Being written: see issue "Scale out on PostgreSQL and Redis". */
export async function createCluster(_config: Config, _storage: Storage, _log: Logger): Promise<ClusterParts> {
  throw new Error('REDIS_URL: multi-instance mode is not available in this build yet');
}
