// This checkout's built FcAttacher (dist/attach/fc/fc-attacher.js), driven by the FC scenarios:
//   identify
//   attach LUN [WWPN,WWPN]
//   detach LUN DEVICE [WWPN,WWPN]
//   is-attached LUN DEVICE [WWPN,WWPN]
//   reserve DISK HOST_ID GENERATION   (ballast's reservation fence on one path, as that host)
// One command from argv, or (no argv) one per line of stdin, each answered with key=value lines
// (ok, ms, and device / wwpns / attached / error) and a line "." so a bash coprocess can read
// them: one node start for the whole scenario (seconds each under TCG). Targets default to
// $FC_ARRAY_WWPNS. The attacher logs at debug level to $BALLAST_VM_LOGS/fc-attacher.log.
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

const src = process.env.BALLAST_SRC;
const attacherFile = `${src}/dist/attach/fc/fc-attacher.js`;
const print = (fields) => {
  for (const [k, v] of Object.entries(fields)) process.stdout.write(`${k}=${String(v).replace(/\s+/g, ' ').trim()}\n`);
  process.stdout.write('.\n');
};
if (!existsSync(attacherFile)) {
  print({ ok: 0, ms: 0, error: `${attacherFile} is missing (npm run build)` });
  process.exit(2);
}
const { FcAttacher } = await import(attacherFile);
const { CommandRunner } = await import(`${src}/dist/exec.js`);
const { ScsiReservations, reservationKey } = await import(`${src}/dist/attach/iscsi/reservations.js`);
const { createLogger } = await import(`${src}/dist/log.js`);

const log = createLogger('debug', `${process.env.BALLAST_VM_LOGS ?? '/tmp'}/fc-attacher.log`);
const attacher = new FcAttacher(new CommandRunner(log), log, { commandTimeoutMs: 30_000 });
const reservations = new ScsiReservations(new CommandRunner(log), log, 30_000);
const context = { hostId: process.env.BALLAST_VM_NAME ?? 'host', generation: 1 };
const fcExport = (lun, wwpns) => ({
  transport: 'fc',
  targetWwpns: (wwpns ?? process.env.FC_ARRAY_WWPNS ?? '').split(/[\s,]+/).filter(Boolean),
  lun: Number(lun),
  multipath: true,
  reservations: false,
});

async function run([command, lun, ...rest]) {
  log.info('fc-attach.mjs', { command: [command, lun, ...rest] });
  const started = performance.now();
  let fields;
  try {
    switch (command) {
      case 'identify':
        fields = { wwpns: ((await attacher.identify()).wwpns ?? []).join(',') };
        break;
      case 'attach':
        fields = { device: await attacher.attach(fcExport(lun, rest[0]), context) };
        break;
      case 'detach':
        await attacher.detach(fcExport(lun, rest[1]), rest[0], context);
        fields = {};
        break;
      case 'is-attached':
        fields = { attached: (await attacher.isAttached(fcExport(lun, rest[1]), rest[0])) ? 1 : 0 };
        break;
      case 'reserve': {
        const disk = lun;
        const key = reservationKey(rest[0], Number(rest[1]));
        const { preempted } = await reservations.take([disk], key);
        fields = { key, preempted: preempted.join(',') || '-', holder: (await reservations.holder(`/dev/${disk}`)) ?? '-', keys: (await reservations.keys(`/dev/${disk}`)).join(',') };
        break;
      }
      default:
        throw new Error(`unknown command ${command}`);
    }
    fields = { ok: 1, ms: Math.round(performance.now() - started), ...fields };
  } catch (err) {
    fields = { ok: 0, ms: Math.round(performance.now() - started), error: err instanceof Error ? err.message : String(err) };
    log.warn('fc-attach.mjs failed', { error: String(err?.stack ?? err) });
  }
  print(fields);
}

if (process.argv.length > 2) await run(process.argv.slice(2));
else for await (const line of createInterface({ input: process.stdin })) if (line.trim()) await run(line.trim().split(/\s+/));

// The file transport writes asynchronously: let it finish before node exits.
await new Promise((resolve) => {
  log.on('finish', resolve);
  log.end();
  setTimeout(resolve, 2_000).unref();
});
