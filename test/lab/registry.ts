import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireRootAndTools } from '../helpers/root.js';
import { GiveUp, stopChild, waitFor } from './command.js';
import { freeTcpPort } from './net.js';

/**
 * Debian's docker-registry (distribution 2.8) on 127.0.0.1 and a free port, storing blobs under
 * DIR/storage: a loopback registry needs no TLS for the docker CLI. Started and stopped by PID.
 */
export class LocalRegistry {
  private child?: ChildProcess;

  private constructor(readonly dir: string, readonly port: number) {}

  /** host:port, the prefix of every reference pushed here. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get logPath(): string {
    return join(this.dir, 'registry.log');
  }

  static async start(dir: string): Promise<LocalRegistry> {
    requireRootAndTools('docker-registry');
    const registry = new LocalRegistry(dir, await freeTcpPort());
    await mkdir(join(dir, 'storage'), { recursive: true });
    const config = join(dir, 'config.yml');
    await writeFile(
      config,
      [
        'version: 0.1',
        'log: {level: info}',
        `storage: {filesystem: {rootdirectory: ${join(dir, 'storage')}}, delete: {enabled: true}}`,
        `http: {addr: "${registry.address}"}`,
        '',
      ].join('\n'),
    );
    const log = openSync(registry.logPath, 'a');
    const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', log, log] });
    closeSync(log);
    registry.child = child;
    await waitFor(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new GiveUp(`docker-registry exited: ${registry.logTail()}`);
        try {
          return (await fetch(`http://${registry.address}/v2/`)).status === 200;
        } catch {
          return false;
        }
      },
      `docker-registry on ${registry.address}`,
      20_000,
      100,
    );
    return registry;
  }

  /** The repositories the registry holds (its catalog API). */
  async catalog(): Promise<string[]> {
    const reply = await fetch(`http://${this.address}/v2/_catalog`);
    return ((await reply.json()) as { repositories?: string[] }).repositories ?? [];
  }

  /** The tags of one repository. */
  async tags(repository: string): Promise<string[]> {
    const reply = await fetch(`http://${this.address}/v2/${repository}/tags/list`);
    return ((await reply.json()) as { tags?: string[] | null }).tags ?? [];
  }

  logTail(lines = 15): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no registry log)';
    }
  }

  /** SIGTERM to the registry this helper started (SIGKILL after 10 s). */
  async stop(): Promise<void> {
    await stopChild(this.child, 'SIGTERM', 10_000);
  }
}
