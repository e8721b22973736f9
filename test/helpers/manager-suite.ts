import { join } from 'node:path';
import { LoopDriver } from '../../src/drivers/loop-driver.js';
import { silentLogger } from '../../src/log.js';
import { managerFixture, type ManagerFixture } from './manager-fixture.js';

// What the VolumeManager unit suites (test/unit/volumes/manager*.test.ts) share: a fresh
// fixture for every test, and the loop driver's files and lease read from outside the manager.
// `f` is a live binding: each test sees the fixture its beforeEach made.

export let f: ManagerFixture;

/** Registers the beforeEach that builds `f` and the afterEach that cleans it up. */
export function freshManagerEachTest(): void {
  beforeEach(async () => (f = await managerFixture()));
  afterEach(() => f.cleanup());
}

/** Replaces this test's fixture by one with `extraConfig` (the afterEach cleans up the new one). */
export async function refixture(extraConfig: Record<string, unknown>): Promise<void> {
  await f.cleanup();
  f = await managerFixture(extraConfig);
}

export const loopRoot = () => join(f.dir, 'loop');
export const image = (name: string) => join(loopRoot(), name, 'disk.img');
export const ownership = async (name: string) => (await new LoopDriver({ root: loopRoot(), shared: false }, silentLogger()).readOwnership(name))?.value;
