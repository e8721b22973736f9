import type { HttpReply, ModuleState, Probe, WriteTest } from '../../../../src/cli/doctor/probe.js';

/**
 * A healthy host by default: every tool on PATH, every daemon running, every module loaded,
 * every file present, every directory writable, dockerd answering. Tests break one thing.
 */
export class FakeProbe implements Probe {
  missingTools = new Set<string>();
  stoppedDaemons = new Set<string>();
  listeningSockets = new Set<string>();
  modules = new Map<string, ModuleState>();
  files = new Map<string, string>([
    ['/etc/iscsi/initiatorname.iscsi', '## DO NOT EDIT\nInitiatorName=iqn.1993-08.org.debian:01:7c39caf82b51\n'],
    ['/etc/nvme/hostnqn', 'nqn.2014-08.org.nvmexpress:uuid:a912a834-33d8-4919-9852-d6557b51cb5f\n'],
    ['/sys/class/fc_host/host3/port_state', 'Online\n'],
    ['/proc/self/mountinfo', '22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n'],
  ]);
  absentPaths = new Set<string>();
  dirs = new Map<string, string[]>([['/sys/class/fc_host', ['host3']]]);
  writes = new Map<string, WriteTest>();
  dockerd: HttpReply | Error = { status: 200, body: 'OK' };
  volumesReply: HttpReply = { status: 200, body: '{"Volumes":[]}' };
  pluginServing = true;
  readonly calls: string[] = [];

  async exists(path: string) {
    return !this.absentPaths.has(path);
  }
  async readText(path: string) {
    return this.absentPaths.has(path) ? undefined : this.files.get(path);
  }
  async list(path: string) {
    return this.absentPaths.has(path) ? [] : (this.dirs.get(path) ?? []);
  }
  async which(tool: string) {
    return this.missingTools.has(tool) ? undefined : `/usr/sbin/${tool}`;
  }
  async processRunning(name: string) {
    return !this.stoppedDaemons.has(name);
  }
  async abstractSocketListening(name: string) {
    return this.listeningSockets.has(name);
  }
  async moduleState(name: string) {
    return this.modules.get(name) ?? 'loaded';
  }
  async writeTest(dir: string): Promise<WriteTest> {
    this.calls.push(`write ${dir}`);
    const now = 1_800_000_000_000;
    return this.writes.get(dir) ?? { outcome: 'written', before: now, after: now + 3, mtimeMs: now + 1 };
  }
  async socketAnswers() {
    return this.pluginServing;
  }
  async httpGet(_socket: string, path: string): Promise<HttpReply> {
    this.calls.push(`GET ${path}`);
    if (this.dockerd instanceof Error) throw this.dockerd;
    return path === '/_ping' ? this.dockerd : this.volumesReply;
  }
}

export const errno = (code: string) => Object.assign(new Error(code), { code });
