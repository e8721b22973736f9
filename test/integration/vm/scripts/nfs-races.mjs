// NFS semantics from two kernels, run in both VMs in lock-step: node nfs-races.mjs ME OTHER DIR
// (DIR: this VM's mount of the shared export). vm1 is the writer in the visibility parts.
// Each part's figures go to $SHARE/races-ME.json; the host test judges them.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Share, sleep } from './nfs-share.mjs';

const [me, other, nfs] = process.argv.slice(2);
const env = (name) => Number(process.env[name]);
const share = new Share(process.env.SHARE, me, other);
const writer = me === 'vm1';
const codeOf = (err) => err?.code ?? String(err);
const hex = () => randomBytes(4).toString('hex');

/** open(flags), write, fsync, close. */
function writeSynced(path, content, flags) {
  const fd = openSync(path, flags);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// Counts the ESTALE and EREMOTEIO (server fault) answers ballast's reader gets (it retries them): wraps fs/promises.readFile,
// which dist/drivers/file-store.js imports, before that module loads.
const fsp = createRequire(import.meta.url)('node:fs/promises');
const churnFile = join(nfs, 'churn', 'value.json');
const reads = { calls: 0, estale: 0, serverFault: 0 };
const realReadFile = fsp.readFile;
fsp.readFile = async (path, ...rest) => {
  if (path !== churnFile) return realReadFile(path, ...rest);
  reads.calls += 1;
  try {
    return await realReadFile(path, ...rest);
  } catch (err) {
    if (err?.errno === -116) reads.estale += 1;
    if (err?.errno === -121) reads.serverFault += 1;
    throw err;
  }
};
syncBuiltinESMExports();
const { LocalFileStore } = await import(`${process.env.BALLAST_SRC}/dist/drivers/file-store.js`);

/** a. open(O_CREAT|O_EXCL) of the same new name from both VMs at once. */
async function exclusiveCreate(rounds) {
  const dir = join(nfs, 'excl');
  mkdirSync(dir, { recursive: true });
  const out = { wins: [], losses: 0, errors: [], winMs: [] };
  for (let i = 0; i < rounds; i++) {
    await share.barrier(`a${i}`);
    const t0 = performance.now();
    const content = `${me} round ${i} ${hex()}`;
    try {
      writeSynced(join(dir, `r${i}`), content, 'wx');
      out.winMs.push(performance.now() - t0);
      out.wins.push({ round: i, content });
    } catch (err) {
      if (codeOf(err) === 'EEXIST') out.losses += 1;
      else out.errors.push(`round ${i}: ${codeOf(err)}`);
    }
  }
  return out;
}

/** b. rename(staging dir with a file inside -> the same target) from both VMs at once. */
async function directoryRename(rounds) {
  const dir = join(nfs, 'rename');
  mkdirSync(dir, { recursive: true });
  const out = { wins: [], losses: {}, errors: [] };
  for (let i = 0; i < rounds; i++) {
    const staging = join(dir, `.staging-${me}-${i}`);
    mkdirSync(staging);
    writeSynced(join(staging, 'meta'), `${me} round ${i}`, 'wx');
    await share.barrier(`b${i}`);
    try {
      renameSync(staging, join(dir, `t${i}`));
      out.wins.push(i);
    } catch (err) {
      const code = codeOf(err);
      if (code === 'ENOTEMPTY' || code === 'EEXIST') out.losses[code] = (out.losses[code] ?? 0) + 1;
      else out.errors.push(`round ${i}: ${code}`);
      rmSync(staging, { recursive: true, force: true });
    }
  }
  return out;
}

/** c. vm1 rewrites a file in place (write, fsync, close); then vm2 opens and reads it. */
async function closeToOpen(rounds) {
  const dir = join(nfs, 'c2o');
  const file = join(dir, 'value');
  mkdirSync(dir, { recursive: true });
  const out = { rounds, fresh: 0, stale: [] };
  for (let i = 0; i < rounds; i++) {
    if (writer) {
      const value = `v${String(i).padStart(4, '0')} ${hex()}`; // same size every round
      writeSynced(file, value, 'w');
      share.post(`c${i}`, value);
      await share.waitFor(`c${i}`);
    } else {
      const expected = await share.waitFor(`c${i}`);
      const seen = readFileSync(file, 'utf8');
      if (seen === expected) out.fresh += 1;
      else out.stale.push({ round: i, expected, seen });
      share.post(`c${i}`);
    }
  }
  return out;
}

const PAD = 'x'.repeat(700);

/**
 * d. vm1 replaces a file atomically ~50 times/s; vm2 reads it in a loop with ballast's reader,
 * with `readers` reads in flight at once (one process, as a daemon serving several requests).
 */
async function readerUnderChurn(tag, seconds, readers) {
  mkdirSync(join(nfs, 'churn'), { recursive: true });
  const payload = (version) => JSON.stringify({ version, pad: PAD, check: version });
  if (writer) {
    // Temp file, fsync, rename: what ballast's writeAtomic does, minus its costlier steps
    // (exclusive create, directory fsync), to keep up the rate in an emulated VM.
    const replace = (version) => {
      writeSynced(`${churnFile}.tmp`, payload(version), 'w');
      renameSync(`${churnFile}.tmp`, churnFile);
    };
    let version = 0;
    replace(version);
    share.post(`${tag}-start`);
    const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000) {
      const next = t0 + (version + 1) * 20;
      replace(++version);
      await sleep(Math.max(0, next - performance.now()));
    }
    share.post(`${tag}-done`, String(version));
    await share.waitFor(`${tag}-read`);
    return { versions: version, seconds: (performance.now() - t0) / 1000 };
  }
  await share.waitFor(`${tag}-start`);
  const store = new LocalFileStore();
  Object.assign(reads, { calls: 0, estale: 0, serverFault: 0 });
  const out = { readers, reads: 0, errors: {}, torn: [], older: [], finalFresh: false };
  // A read that began after another one ended must not return an older version than that one did.
  let newestEnded = -1;
  const check = async () => {
    const floor = newestEnded;
    let text;
    try {
      text = await store.readFile(churnFile);
      out.reads += 1;
    } catch (err) {
      out.errors[codeOf(err)] = (out.errors[codeOf(err)] ?? 0) + 1;
      return;
    }
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
    if (!data || data.check !== data.version || data.pad !== PAD) {
      out.torn.push(String(text).slice(0, 80));
      return;
    }
    if (data.version < floor) out.older.push({ after: floor, got: data.version });
    newestEnded = Math.max(newestEnded, data.version);
  };
  let done = false;
  const watch = setInterval(() => (done = share.posted(`${tag}-done`)), 200);
  await Promise.all(Array.from({ length: readers }, async () => {
    while (!done) await check();
  }));
  clearInterval(watch);
  const final = Number(await share.waitFor(`${tag}-done`));
  await check();
  out.finalFresh = newestEnded === final;
  out.readFileCalls = reads.calls; // 0 would mean the ESTALE count below saw nothing
  out.estale = reads.estale;
  out.serverFault = reads.serverFault;
  share.post(`${tag}-read`);
  return out;
}

const result = {};
result.excl = await exclusiveCreate(env('EXCL_ROUNDS'));
result.rename = await directoryRename(env('RENAME_ROUNDS'));
result.c2o = await closeToOpen(env('C2O_ROUNDS'));
result.churn = await readerUnderChurn('d1', env('CHURN_SECONDS'), 1);
result.concurrentChurn = await readerUnderChurn('d2', env('CHURN_SECONDS'), 3);
share.report('races', result);
