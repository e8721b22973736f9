// ballast's own compare-and-swap on NFS, from two VMs on one volume:
//   node nfs-cas-stress.mjs ME OTHER DIR PHASE [create]
// The built LoopDriver (shared root DIR/loop) and OwnershipLease acquire and release the volume
// in a loop for $CAS_SECONDS; every generation this VM got, and every "stale metadata guard"
// the driver broke, go to $SHARE/cas-PHASE-ME.json for the host test.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { Share, sleep } from './nfs-share.mjs';

const [me, other, nfs, phase, create] = process.argv.slice(2);
const src = process.env.BALLAST_SRC;
const seconds = Number(process.env.CAS_SECONDS);
const share = new Share(process.env.SHARE, me, other);
const { LoopDriver } = await import(`${src}/dist/drivers/loop-driver.js`);
const { OwnershipLease } = await import(`${src}/dist/ownership/lease.js`);
const { LeaseHeld, StaleRevision } = await import(`${src}/dist/errors.js`);

const VOLUME = 'casvol';
const warnings = [];
let guardBreaks = 0;
const countWarnings = winston.format((info) => {
  if (info.level === 'warn') {
    warnings.push(String(info.message));
    if (String(info.message).includes('stale metadata guard')) guardBreaks += 1;
  }
  return info;
});
const logger = winston.createLogger({
  level: 'warn',
  format: winston.format.combine(countWarnings(), winston.format.timestamp(), winston.format.json()),
  transports: [new winston.transports.File({ filename: join(process.env.BALLAST_VM_LOGS ?? '/tmp', `cas-${phase}.log`) })],
});

const driver = new LoopDriver({ root: join(nfs, 'loop'), shared: true }, logger);
const identity = { hostId: me, bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), hostname: hostname() };
const lease = new OwnershipLease(driver, identity, logger);
const generation = async () => (await driver.read(VOLUME)).value.ownership.generation;
const codeOf = (err) => err?.code ?? err?.constructor?.name ?? String(err);

if (create) {
  await driver.create({ name: VOLUME, profile: 'default', sizeBytes: 16 << 20, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });
}
await share.barrier(`e${phase}-ready`); // the volume exists
const startGeneration = await generation();
await share.barrier(`e${phase}-go`);
const wallAtGo = Date.now();

const out = { phase, startGeneration, acquired: [], held: 0, stale: 0, errors: {}, releaseRetries: 0 };
const count = (err) => (out.errors[codeOf(err)] = (out.errors[codeOf(err)] ?? 0) + 1);

/** A release lost to a race is retried: the next acquire must not find the volume still ours. */
async function release() {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await lease.release(VOLUME);
      return;
    } catch (err) {
      if (!(err instanceof StaleRevision)) count(err);
      out.releaseRetries += 1;
      await sleep(5 + Math.random() * 20);
    }
  }
  throw new Error(`${me}: could not release ${VOLUME} in 50 attempts`);
}

const t0 = performance.now();
while (performance.now() - t0 < seconds * 1000) {
  try {
    out.acquired.push((await lease.acquire(VOLUME)).generation);
  } catch (err) {
    if (err instanceof LeaseHeld) out.held += 1;
    else if (err instanceof StaleRevision) out.stale += 1;
    else count(err);
    await sleep(5 + Math.random() * 20); // the other host holds it for a moment
    continue;
  }
  await release();
}
out.seconds = (performance.now() - t0) / 1000;
await share.barrier(`e${phase}-done`);
out.endGeneration = await generation();
out.wallAtGo = wallAtGo;
out.guardBreaks = guardBreaks;
out.warnings = warnings.slice(0, 5);
share.report(`cas-${phase}`, out);
logger.end();
