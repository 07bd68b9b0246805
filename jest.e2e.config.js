/** Browser end-to-end suite: Debian's Chromium driven by playwright-core. */
const transform = require('./jest.transform');

module.exports = {
  testEnvironment: 'node',
  ...transform,
  testMatch: ['<rootDir>/tests/e2e/**/*.test.ts'],
  testTimeout: 60000,
};
