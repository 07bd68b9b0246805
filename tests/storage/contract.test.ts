/**
 * The storage contract (tests/storage/contract.ts) on this project's engine: SQLite in the `sqlite`
 * jest project, PostgreSQL in the `postgres` one (TEST_DATABASE_URL set; a fresh database per test).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStorage } from '../../server/storage';
import { testDatabaseUrl } from '../support/server';
import { storageContract } from './contract';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

storageContract(testDatabaseUrl() ? 'postgres' : 'sqlite', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-contract-'));
  dirs.push(dataDir);
  // Read per test: on PostgreSQL every test gets a database of its own.
  return openStorage({ databaseUrl: testDatabaseUrl(), dataDir });
});
