// Jest runs the TypeScript sources as native ES modules (npm test sets --experimental-vm-modules), compiled by swc
// without type checking (`npm run typecheck` does that). Every test file gets its own database cloned from a
// template that global-setup migrates once, so files run in parallel.
/** @type {import('jest').Config} */
export default {
  testEnvironment: "node",
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  extensionsToTreatAsEsm: [".ts"],
  transform: {
    "^.+\\.ts$": ["@swc/jest", { jsc: { parser: { syntax: "typescript" }, target: "es2024" }, module: { type: "es6" } }],
  },
  globalSetup: "<rootDir>/test/global-setup.ts",
  globalTeardown: "<rootDir>/test/global-teardown.ts",
  testTimeout: 60_000,
  // Two cores: more workers only add contention with the PostgreSQL server they share.
  maxWorkers: 2,
};
