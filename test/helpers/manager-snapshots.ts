import type { VolumeManager } from '../../src/volumes/manager.js';

/** How an array's snapshot test sees one of its volumes, for the manager-level round trip. */
export interface ArrayVolumeView {
  /** The profile whose backend is the array. */
  profile: string;
  writeData(name: string): Promise<void>;
  dataOf(name: string): Promise<string>;
  /** Whether the array still has the volume. */
  onArray(name: string): boolean;
  /** The array's own checks once Remove --with-snapshots took `name` and its snapshot. */
  afterRemoveWithSnapshots(name: string, clone: string, data: string): Promise<void> | void;
}

/**
 * Through the volume manager: a snapshot of a written volume, a clone from VOLUME@SNAPSHOT with
 * the snapshot's data, Remove refused while the snapshot exists, Remove --with-snapshots, and the
 * clone removed last. The same sequence on every array with snapshots.
 */
export async function snapshotsThroughManager(manager: VolumeManager, unique: (prefix: string) => string, array: ArrayVolumeView): Promise<void> {
  const name = unique('mgr');
  await manager.create(name, { profile: array.profile, size: '1G' });
  await array.writeData(name);
  const data = await array.dataOf(name);
  await manager.snapshots.create(name, 'before');
  expect((await manager.snapshots.list(name)).map((s) => s.name)).toEqual(['before']);
  const clone = unique('mgr-c');
  await manager.create(clone, { from: `${name}@before` });
  expect(await array.dataOf(clone)).toBe(data);
  await expect(manager.remove(name)).rejects.toThrow(/has 1 snapshot\(s\) \(before\)/);
  expect(array.onArray(name)).toBe(true);
  await manager.remove(name, true);
  expect(array.onArray(name)).toBe(false);
  await array.afterRemoveWithSnapshots(name, clone, data);
  await manager.remove(clone);
  expect(array.onArray(clone)).toBe(false);
}
