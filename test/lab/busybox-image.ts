import { copyFileSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describeResult, runCommand } from './command.js';

// The lab's container images, imported with `docker import` (no registry involved): busybox:local,
// which every Docker test runs (the machine's static busybox and its applets), and sqlite:local.

export const IMAGE = 'busybox:local';
export const SQLITE_IMAGE = 'sqlite:local';

/** Applets linked into the busybox image. */
const APPLETS = [
  'sh', 'ash', 'ls', 'cat', 'echo', 'printf', 'md5sum', 'sha256sum', 'dd', 'head', 'tail', 'sleep', 'mkdir', 'rm',
  'wc', 'test', '[', 'true', 'false', 'sync', 'stat', 'date', 'touch', 'grep', 'cp', 'mv', 'seq', 'df', 'id', 'env',
  'tee', 'kill', 'cut', 'sort', 'uniq', 'tr', 'xargs', 'find', 'du', 'mount', 'hostname', 'awk', 'expr',
];

/**
 * A root filesystem tarball for busybox:local (the machine's static busybox and its applets),
 * written to DIR/busybox.tar; `extra(root)` may add files before it is packed.
 */
export async function buildBusyboxTar(dir: string, options: { name?: string; extra?: (root: string) => Promise<void> | void } = {}): Promise<string> {
  const name = options.name ?? 'busybox';
  const root = join(dir, `${name}-root`);
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'tmp'), { recursive: true });
  mkdirSync(join(root, 'etc'), { recursive: true });
  // Image content at a path a volume can be mounted on: dockerd copies it into a new volume.
  writeFileSync(join(root, 'etc', 'image-release'), `${name}:local for ballast tests\n`);
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!busybox) throw new Error('no /bin/busybox: run scripts/install-deps.sh (busybox-static)');
  copyFileSync(busybox, join(root, 'bin/busybox'));
  for (const applet of APPLETS) symlinkSync('busybox', join(root, 'bin', applet));
  await options.extra?.(root);
  const tar = join(dir, `${name}.tar`);
  const tarred = await runCommand(['tar', '-C', root, '-cf', tar, '.'], { timeoutMs: 30_000 });
  if (tarred.code !== 0) throw new Error(`tar failed: ${describeResult(tarred)}`);
  await rm(root, { recursive: true, force: true });
  return tar;
}

/**
 * sqlite:local: busybox:local plus the machine's /usr/bin/sqlite3 and the shared libraries ldd
 * names for it (and the dynamic loader), at the same paths. Built once per cluster.
 */
export async function buildSqliteTar(dir: string): Promise<string> {
  const ldd = await runCommand(['ldd', '/usr/bin/sqlite3'], { timeoutMs: 15_000 });
  if (ldd.code !== 0) throw new Error(`ldd /usr/bin/sqlite3 failed: ${describeResult(ldd)}`);
  const libs = ldd.stdout
    .split('\n')
    .map((l) => /=>\s*(\/\S+)/.exec(l)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(l)?.[1])
    .filter((p): p is string => !!p);
  if (!libs.some((l) => l.includes('libsqlite3'))) throw new Error(`ldd named no libsqlite3:\n${ldd.stdout}`);
  return buildBusyboxTar(dir, {
    name: 'sqlite',
    extra: (root) => {
      copyFileSync('/usr/bin/sqlite3', join(root, 'bin', 'sqlite3'));
      for (const lib of libs) {
        mkdirSync(join(root, dirname(lib)), { recursive: true });
        copyFileSync(lib, join(root, lib)); // follows the symlink: the real library under the linked name
      }
    },
  });
}
