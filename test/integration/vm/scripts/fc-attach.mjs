// This checkout's built FcAttacher (dist/attach/fc/fc-attacher.js), driven by the FC scenarios
// through attach-coproc.mjs:
//   identify
//   attach LUN [WWPN,WWPN]
//   detach LUN DEVICE [WWPN,WWPN]
//   is-attached LUN DEVICE [WWPN,WWPN]
//   reserve DISK HOST_ID GENERATION   (ballast's reservation fence on one path, as that host)
// Answers carry device / wwpns / attached / key, preempted, holder, keys. Targets default to
// $FC_ARRAY_WWPNS. The attacher logs at debug level to $BALLAST_VM_LOGS/fc-attacher.log.
import { importBuilt, serveCommands } from './attach-coproc.mjs';

const { FcAttacher } = await importBuilt('attach/fc/fc-attacher.js');
const { CommandRunner } = await importBuilt('exec.js');
const { ScsiReservations, reservationKey } = await importBuilt('attach/iscsi/reservations.js');
const { createLogger } = await importBuilt('log.js');

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

await serveCommands(log, {
  identify: async () => ({ wwpns: ((await attacher.identify()).wwpns ?? []).join(',') }),
  attach: async (lun, wwpns) => ({ device: await attacher.attach(fcExport(lun, wwpns), context) }),
  detach: async (lun, device, wwpns) => {
    await attacher.detach(fcExport(lun, wwpns), device, context);
    return {};
  },
  'is-attached': async (lun, device, wwpns) => ({ attached: (await attacher.isAttached(fcExport(lun, wwpns), device)) ? 1 : 0 }),
  reserve: async (disk, hostId, generation) => {
    const key = reservationKey(hostId, Number(generation));
    const { preempted } = await reservations.take([disk], key);
    return { key, preempted: preempted.join(',') || '-', holder: (await reservations.holder(`/dev/${disk}`)) ?? '-', keys: (await reservations.keys(`/dev/${disk}`)).join(',') };
  },
});
