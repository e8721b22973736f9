import { createServer } from 'node:http';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenOnSocket } from '../../src/plugin/listen.js';

// Runs as root (chown); the group file is the test's own, so no system group is changed.
describe('the plugin socket: root and the docker group only', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'ballast-sock-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const listen = async (groupLines: string) => {
    const groups = join(dir, 'group');
    await writeFile(groups, groupLines);
    const server = createServer();
    await listenOnSocket(server, join(dir, 'p.sock'), groups);
    const s = await stat(join(dir, 'p.sock'));
    await new Promise((r) => server.close(r));
    return s;
  };

  it('is mode 0660, owned by root and the docker group', async () => {
    if (process.getuid?.() !== 0) throw new Error('this test needs root (it chowns the socket)');
    const s = await listen('root:x:0:\ndockerx:x:77:\ndocker:x:4242:alice\n');
    expect([s.mode & 0o777, s.uid, s.gid]).toEqual([0o660, 0, 4242]);
  });

  it("is root's group alone on a host without a docker group", async () => {
    const s = await listen('root:x:0:\nstaff:x:50:\n');
    expect([s.mode & 0o777, s.gid]).toEqual([0o660, 0]);
  });
});
