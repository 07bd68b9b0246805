/**
 * How Jest compiles code, shared by jest.config.js and jest.e2e.config.js: our TypeScript with swc,
 * and aedes (the MQTT broker), which ships as an ES module. Node 20 loads it with require(); Jest
 * on Node 20 cannot, so Jest compiles it to CommonJS too.
 */
const ESM_PACKAGES = ['aedes'];

module.exports = {
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }],
    [`/node_modules/(${ESM_PACKAGES.join('|')})/.+\\.js$`]: ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_PACKAGES.join('|')})/)`],
};
