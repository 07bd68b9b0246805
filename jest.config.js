/**
 * Unit and integration tests: real servers on port 0. tests/ mirrors server/: the tests of
 * server/<feature>/ are in tests/<feature>/, whole-process behaviour (shutdown, crash, storage
 * outage) in tests/app/, shared helpers in tests/support/.
 * - `sqlite` project: always; every server gets its own SQLite file.
 * - `postgres` project: when TEST_DATABASE_URL is set, the same tests again on PostgreSQL, each
 *   test on a fresh database, all dropped when its file is done (tests/support/pg.ts).
 * - tests/cluster/*.test.ts: several instances on Redis and PostgreSQL; they run in the postgres
 *   project and skip themselves unless TEST_REDIS_URL is set too.
 */
const transform = require('./jest.transform');

const shared = {
  testEnvironment: 'node',
  ...transform,
  testMatch: ['<rootDir>/tests/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/tests/e2e/'],
};

/** Tests that do not use the configured engine; running them a second time on PostgreSQL proves nothing. */
const engineFree = [
  '<rootDir>/tests/esp32/fake-server.test.ts',
  '<rootDir>/tests/esp32/tls.test.ts',
  '<rootDir>/tests/esp32/snippet.test.ts',
  '<rootDir>/tests/tls/certificates.test.ts',
  '<rootDir>/tests/tls/material.test.ts',
  '<rootDir>/tests/config/',
  '<rootDir>/tests/devices/codec.test.ts',
  '<rootDir>/tests/realtime/broadcast.test.ts',
  '<rootDir>/tests/simulator/values.test.ts',
  '<rootDir>/tests/storage/sqlite-thread.test.ts',
];

const projects = [
  {
    ...shared,
    displayName: 'sqlite',
    testPathIgnorePatterns: [...shared.testPathIgnorePatterns, '<rootDir>/tests/cluster/'],
  },
];
if (process.env.TEST_DATABASE_URL) {
  projects.push({
    ...shared,
    displayName: 'postgres',
    testEnvironment: '<rootDir>/tests/support/pg.ts',
    testPathIgnorePatterns: [...shared.testPathIgnorePatterns, ...engineFree],
  });
}

module.exports = {
  projects,
  testTimeout: 30000,
  maxWorkers: 2,
};
