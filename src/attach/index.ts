import type { Exec } from '../exec.js';
import type { Export } from '../export.js';
import type { Logger } from '../log.js';
import { FcAttacher } from './fc/fc-attacher.js';
import { IscsiAttacher } from './iscsi/iscsi-attacher.js';
import { LoopAttacher } from './loop-attacher.js';
import { NvmeTcpAttacher } from './nvme/nvme-attacher.js';
import type { Attacher } from './types.js';
import { VmdkAttacher } from './vmdk/vmdk-attacher.js';

export type { Attacher } from './types.js';
export { CommandRunner, type Exec, type ExecOptions, type ExecResult } from '../exec.js';
export { Filesystem } from './filesystem.js';
export { Luks } from './luks.js';
export { MountTable } from '../util/mountinfo.js';

/** Settings of attachers that need any: `vmUuid` is backends.vmdk.vm_uuid, this VM's BIOS UUID. */
export interface AttacherSettings {
  vmUuid?: string;
}

/** The attacher for each transport. */
export function createAttachers(exec: Exec, log: Logger, commandTimeoutMs: number, options: AttacherSettings = {}): Map<Export['transport'], Attacher> {
  return new Map<Export['transport'], Attacher>([
    ['loop', new LoopAttacher(exec)],
    ['iscsi', new IscsiAttacher(exec, log.child({ transport: 'iscsi' }), { commandTimeoutMs })],
    ['fc', new FcAttacher(exec, log.child({ transport: 'fc' }), { commandTimeoutMs })],
    ['nvme-tcp', new NvmeTcpAttacher(exec, log.child({ transport: 'nvme-tcp' }), { commandTimeoutMs })],
    ['vmdk', new VmdkAttacher(exec, log.child({ transport: 'vmdk' }), { commandTimeoutMs, vmUuid: options.vmUuid })],
  ]);
}
