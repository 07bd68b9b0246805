/** Browser end-to-end suite: Debian's Chromium driven by playwright-core. */
module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  testMatch: ['<rootDir>/tests/e2e/**/*.test.ts'],
  testTimeout: 60000,
};
