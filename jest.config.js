/** Unit and integration tests: real servers on port 0, real SQLite; PostgreSQL/Redis suites run when TEST_DATABASE_URL / TEST_REDIS_URL are set. */
module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  testMatch: ['<rootDir>/tests/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/tests/e2e/'],
  testTimeout: 30000,
  maxWorkers: 2,
};
