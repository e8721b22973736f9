import { RemoteFileStore } from '../../../src/drivers/array-host/exec-file-store.js';
import { FakeExec } from '../../helpers/fake-exec.js';

// RemoteFileStore's commands as the array host receives them; the same commands run for real
// on a full filesystem in test/integration/backend-failures.test.ts.

const GUARD = '/srv/ballast/v/meta.lock';

function arrayHost() {
  const exec = Object.assign(new FakeExec(), { settings: { username: 'root', host: 'array1' }, target: 'root@array1:22' });
  return { exec, files: new RemoteFileStore(exec) };
}

describe('RemoteFileStore', () => {
  describe('writeNew', () => {
    it('creates (O_EXCL), writes and syncs in one command, with the guard path as a parameter', async () => {
      const { exec, files } = arrayHost();
      await files.writeNew(GUARD, '{"host":"a"}');
      expect(exec.calls).toEqual([['sh', '-c', expect.stringMatching(/^set -C && exec 3> "\$1" \|\| exit; /), 'sh', GUARD]]);
    });

    it('removes the file it created when the write fails (a full disk), in that same command, and reports ENOSPC', async () => {
      const { exec, files } = arrayHost();
      exec.reply({ match: 'sh -c', exitCode: 1, stderr: 'cat: write error: No space left on device\n' });
      await expect(files.writeNew(GUARD, '{"host":"a"}')).rejects.toMatchObject({ code: 'ENOSPC', path: GUARD });
      expect(exec.calls).toHaveLength(1);
      // Only after the exclusive create succeeded: a file that was there already is someone else's.
      const script = exec.calls[0]![2]!;
      expect(script.slice(script.indexOf('|| exit;'))).toMatch(/\{ cat >&3 && sync -- "\$1"; \} \|\| \{ s=\$\?; rm -f -- "\$1"; exit \$s; \}$/);
    });

    it.each([
      ['dash', 'sh: 1: cannot create /srv/ballast/v/meta.lock: File exists'],
      ['bash', 'sh: line 1: /srv/ballast/v/meta.lock: cannot overwrite existing file'],
    ])('reports EEXIST when the guard exists (%s wording)', async (_shell, stderr) => {
      const { exec, files } = arrayHost();
      exec.reply({ match: 'sh -c', exitCode: 2, stderr });
      await expect(files.writeNew(GUARD, 'x')).rejects.toMatchObject({ code: 'EEXIST', path: GUARD });
    });
  });
});
