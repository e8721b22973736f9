// This checkout's built NvmeTcpAttacher (dist/attach/nvme/nvme-attacher.js), driven by
// nvme-tcp.sh through attach-coproc.mjs:
//   identify
//   attach NQN NGUID PORTAL[,PORTAL]
//   detach NQN NGUID PORTAL[,PORTAL] DEVICE
// Answers carry nqn / device. Logs at debug level to $BALLAST_VM_LOGS/nvme-attacher.log.
import { importBuilt, serveCommands } from './attach-coproc.mjs';

const { NvmeTcpAttacher } = await importBuilt('attach/nvme/nvme-attacher.js');
const { CommandRunner } = await importBuilt('exec.js');
const { createLogger } = await importBuilt('log.js');

const log = createLogger('debug', `${process.env.BALLAST_VM_LOGS ?? '/tmp'}/nvme-attacher.log`);
const attacher = new NvmeTcpAttacher(new CommandRunner(log), log, { commandTimeoutMs: 30_000, deviceWaitMs: 15_000 });
const context = { hostId: process.env.BALLAST_VM_NAME ?? 'host', generation: 1 };
const nvmeExport = (nqn, nguid, portals) => ({ transport: 'nvme-tcp', subsystemNqn: nqn, nguid, portals: portals.split(',') });

await serveCommands(log, {
  identify: async () => ({ nqn: (await attacher.identify()).nqn }),
  attach: async (nqn, nguid, portals) => ({ device: await attacher.attach(nvmeExport(nqn, nguid, portals), context) }),
  detach: async (nqn, nguid, portals, device) => {
    await attacher.detach(nvmeExport(nqn, nguid, portals), device, context);
    return {};
  },
});
