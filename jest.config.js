// Three projects: unit (fakes at the edges only), plugin (HTTP over supertest and a real
// Unix socket) and integration (root: real losetup/mkfs/mount and a real dockerd).
const common = {
  preset: 'ts-jest/presets/default-esm',
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.test.json' }] },
  modulePathIgnorePatterns: ['<rootDir>/dist/'],
};
export default {
  // Integration tests wait on real leases, daemons and dockerd; each bounds its own waits.
  testTimeout: 180_000,
  testSequencer: '<rootDir>/test/long-suites-first.mjs',
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    { ...common, displayName: 'plugin', testMatch: ['<rootDir>/test/plugin/**/*.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      testTimeout: 180_000,
      // At most two heavy suites (VMs, package builds) at a time: test/lab/heavy-slots.ts.
      setupFilesAfterEnv: ['<rootDir>/test/lab/heavy-slots-setup.ts'],
    },
  ],
};
