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

/**
 * Tests that do not use the configured engine, or use it only as every device test does (the
 * transports, TLS, the firmware host build, the simulator: framing and crypto around the same
 * storage calls the device and API tests already run on PostgreSQL). Running them a second time on
 * PostgreSQL proves nothing and costs CI minutes.
 */
const engineFree = [
  '<rootDir>/tests/devices/transports/',
  '<rootDir>/tests/tls/',
  '<rootDir>/tests/simulator/',
  '<rootDir>/tests/esp32/',
  '<rootDir>/tests/examples/',
  '<rootDir>/tests/app/banner.test.ts',
  '<rootDir>/tests/app/logger.test.ts',
  '<rootDir>/tests/web/device-host.test.ts',
  '<rootDir>/tests/config/',
  '<rootDir>/tests/devices/codec.test.ts',
  '<rootDir>/tests/realtime/broadcast.test.ts',
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
  // Most tests wait on timers and sockets, not the CPU: four at once on two cores keeps CI in time.
  maxWorkers: 4,
};
