import { chmod, chown, mkdir, readFile, unlink } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { dirname } from 'node:path';
import type { Server } from 'node:http';
import { BallastError } from '../errors.js';

export class SocketInUse extends BallastError {
  readonly code = 'BALLAST_SOCKET_IN_USE';
  readonly kind = 'conflict';
}

/** Resolves true if something accepts connections on the socket, false if it is stale or absent. */
export function socketIsLive(path: string, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ path });
    const done = (live: boolean) => {
      socket.destroy();
      resolve(live);
    };
    socket.setTimeout(timeoutMs, () => done(true)); // accepted but silent: someone is there
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function listenOnce(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(path);
  });
}

/** The docker group's id from a group file (/etc/group), or undefined where there is none. */
export async function dockerGroupId(groupFile = '/etc/group'): Promise<number | undefined> {
  const text = await readFile(groupFile, 'utf8').catch(() => '');
  const line = text.split('\n').find((l) => l.startsWith('docker:'));
  const gid = Number(line?.split(':')[2]);
  return line && Number.isInteger(gid) ? gid : undefined;
}

/**
 * Listens on a Unix socket, mode 0660, group docker where that group exists (root's otherwise):
 * only root and the docker group, who may use dockerd anyway, reach the plugin and its admin
 * calls. A stale socket (nobody answers) is removed; a live one means another ballast runs
 * there, and this one refuses to start.
 */
export async function listenOnSocket(server: Server, path: string, groupFile?: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  try {
    await listenOnce(server, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    if (await socketIsLive(path)) {
      throw new SocketInUse(`another ballast is already serving ${path}; stop it first (or set "socket" in the configuration to another path)`);
    }
    await unlink(path);
    await listenOnce(server, path);
  }
  await chmod(path, 0o660);
  const gid = await dockerGroupId(groupFile);
  if (gid !== undefined) await chown(path, 0, gid);
}
