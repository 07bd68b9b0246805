import type { Config } from '../config';
import { Storage } from './types';

export * from './types';

/** Opens the configured engine and brings its schema up to date. */
export async function openStorage(config: Pick<Config, 'databaseUrl' | 'dataDir'>): Promise<Storage> {
  if (config.databaseUrl) {
    const { PostgresStorage } = await import('./postgres-storage');
    return PostgresStorage.open(config.databaseUrl);
  }
  const { SqliteStorage } = await import('./sqlite-storage');
  return SqliteStorage.open(config.dataDir);
}
