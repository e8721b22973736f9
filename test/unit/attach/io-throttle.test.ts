import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deviceNumbers, ioCgroupOf, throttle } from '../../../src/attach/io-throttle.js';

// A fixture /proc and /sys/fs/cgroup (the edge); the real cgroup path is exercised by the docker
// suite's io-limits test (test/integration/docker/volumes.test.ts).
describe('io throttle', () => {
  let dir: string;
  const roots = () => ({ proc: join(dir, 'proc'), cgroup: join(dir, 'cgroup') });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-io-'));
    await mkdir(join(dir, 'proc', '42'), { recursive: true });
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('finds the blkio cgroup on v1 and the unified one on v2', async () => {
    await writeFile(join(dir, 'proc', '42', 'cgroup'), '12:pids:/docker/abc\n4:blkio:/docker/abc\n0::/docker/abc\n');
    expect(await ioCgroupOf(42, roots())).toEqual({ version: 1, dir: join(dir, 'cgroup', 'blkio', 'docker', 'abc') });
    await writeFile(join(dir, 'proc', '42', 'cgroup'), '0::/system.slice/docker-abc.scope\n');
    expect(await ioCgroupOf(42, roots())).toEqual({ version: 2, dir: join(dir, 'cgroup', 'system.slice', 'docker-abc.scope') });
    await writeFile(join(dir, 'proc', '42', 'cgroup'), '');
    await expect(ioCgroupOf(42, roots())).rejects.toThrow(/process 42 is in no block IO cgroup/);
  });

  it('writes each limit given for the device, as v1 files or one v2 io.max line', async () => {
    expect(await deviceNumbers('/dev/null')).toBe('1:3');
    const v1 = join(dir, 'v1');
    await mkdir(v1);
    await throttle({ version: 1, dir: v1 }, '/dev/null', { writeBps: 2097152, readIops: 50 });
    expect(await readFile(join(v1, 'blkio.throttle.write_bps_device'), 'utf8')).toBe('1:3 2097152\n');
    expect(await readFile(join(v1, 'blkio.throttle.read_iops_device'), 'utf8')).toBe('1:3 50\n');
    await expect(readFile(join(v1, 'blkio.throttle.read_bps_device'))).rejects.toMatchObject({ code: 'ENOENT' });
    const v2 = join(dir, 'v2');
    await mkdir(v2);
    await throttle({ version: 2, dir: v2 }, '/dev/null', { readBps: 1000, writeIops: 7 });
    expect(await readFile(join(v2, 'io.max'), 'utf8')).toBe('1:3 rbps=1000 wiops=7\n');
  });
});
