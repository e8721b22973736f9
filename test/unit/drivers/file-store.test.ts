import { retryStale } from '../../../src/drivers/file-store.js';

// The real path (another kernel's rename under ballast's reader on NFS) runs in
// test/integration/vm/nfs-semantics.test.ts; this pins which answers count as "handle went away".

function errnoError(code: string, errno: number): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code, errno });
}

async function failingFirst(times: number, err: NodeJS.ErrnoException): Promise<{ value: string; calls: number }> {
  let calls = 0;
  const value = await retryStale('/nonexistent-dir/file', async () => {
    calls += 1;
    if (calls <= times) throw err;
    return 'fresh';
  });
  return { value, calls };
}

describe('retryStale', () => {
  it.each([
    ['ESTALE (Node names it only by errno)', errnoError('Unknown system error -116', -116)],
    ['EREMOTEIO (NFS4ERR_SERVERFAULT from the server)', errnoError('EREMOTEIO', -121)],
  ])('reads again after %s', async (_what, err) => {
    await expect(failingFirst(3, err)).resolves.toEqual({ value: 'fresh', calls: 4 });
  });

  it('gives up after 16 attempts with the last error', async () => {
    await expect(failingFirst(100, errnoError('EREMOTEIO', -121))).rejects.toThrow('EREMOTEIO');
    await expect(failingFirst(15, errnoError('EREMOTEIO', -121))).resolves.toEqual({ value: 'fresh', calls: 16 });
  });

  it('does not retry other errors', async () => {
    let calls = 0;
    await expect(retryStale('/x', async () => { calls += 1; throw errnoError('EACCES', -13); })).rejects.toThrow('EACCES');
    expect(calls).toBe(1);
  });
});
