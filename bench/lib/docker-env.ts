// A private dockerd and a ballast daemon sharing one private mount namespace, so that ballast's
// socket lands in that namespace's /run/docker/plugins and its mounts are seen by that dockerd.
// Everything started here is registered on the caller's CleanupStack, undone last-in first-out.
import { copyFile, mkdir, readdir, readlink, rmdir, symlink, writeFile } from 'node:fs/promises';
import { existsSync, readlinkSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { BallastProcess } from '../../test/helpers/daemon.js';
import { startBallast } from './ballast.js';
import { cleanUpUnder, type CleanupStack } from './cleanup.js';
import { isRunning, run, sleep, spawnLong, stopChild, type RunResult } from './proc.js';

/** Creates `dir` and any missing parents; returns the ones it created, outermost first. */
async function mkdirTracked(dir: string): Promise<string[]> {
  const missing: string[] = [];
  for (let d = dir; !existsSync(d); d = dirname(d)) missing.unshift(d);
  for (const d of missing) await mkdir(d);
  return missing;
}

/**
 * PIDs (but `except`) in the mount namespace `ns` ("mnt:[inode]", read when the holder started,
 * so this works after the holder died). Never the bench's own namespace.
 */
function processesInNamespace(ns: string, except?: number): number[] {
  if (ns === readlinkSync('/proc/self/ns/mnt')) return []; // not private: never sweep the host's
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === except) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/mnt`) === ns) pids.push(Number(entry));
    } catch {
      // gone, or a kernel thread
    }
  }
  return pids;
}

/** rmdir of a cgroup and its children (a container's cgroup left by an interrupted run), deepest first. */
async function removeCgroup(path: string): Promise<void> {
  for (const entry of await readdir(path, { withFileTypes: true })) {
    if (entry.isDirectory()) await removeCgroup(join(path, entry.name));
  }
  await rmdir(path);
}

export class PrivateDocker {
  readonly socket: string;
  readonly nsPrefix: string[];
  private readonly env: NodeJS.ProcessEnv;

  private constructor(
    readonly dir: string,
    readonly holder: ChildProcess,
    readonly ballast: BallastProcess,
    readonly dockerd: ChildProcess,
  ) {
    this.socket = join(dir, 'docker.sock');
    this.nsPrefix = ['nsenter', `--mount=/proc/${holder.pid}/ns/mnt`];
    const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: join(dir, 'cli-config') };
    delete env.DOCKER_HOST;
    delete env.DOCKER_CONTEXT;
    delete env.DOCKER_TLS_VERIFY;
    this.env = env;
  }

  /** `docker -H unix://SOCKET ARGS...`, bounded. */
  docker(args: readonly string[], timeoutMs = 60_000, cleanup = false): Promise<RunResult> {
    return run(['docker', '-H', `unix://${this.socket}`, ...args], { timeoutMs, env: this.env, cleanup });
  }

  static async start(dir: string, cleanup: CleanupStack, log: (line: string) => void): Promise<PrivateDocker> {
    for (const sub of ['data', 'exec', 'etc-docker', 'cli-config', 'image-root/bin']) await mkdir(join(dir, sub), { recursive: true });
    const configFile = join(dir, 'daemon.json');
    await writeFile(configFile, '{}\n');

    // Mount points the namespace covers with its own tmpfs / bind mounts. Created on the host
    // only if missing, and removed again (when empty) at the end.
    const created: string[] = [];
    cleanup.push('remove the mount-point directories the bench created', async () => {
      for (const d of created.reverse()) await rmdir(d).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    });
    for (const d of ['/run/docker/plugins', '/run/containerd', '/etc/docker']) created.push(...(await mkdirTracked(d)));

    // Containers' cgroups go under a parent of the bench's own (cgroup v1: one per controller;
    // v2: one), removed once every process is gone.
    const cgroupParent = `ballast-bench-${randomBytes(4).toString('hex')}`;
    cleanup.push(`remove the cgroups ${cgroupParent}`, async () => {
      const candidates = [join('/sys/fs/cgroup', cgroupParent)];
      for (const controller of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
        candidates.push(join('/sys/fs/cgroup', controller, cgroupParent));
      }
      for (const cg of candidates) if (existsSync(cg)) await removeCgroup(cg);
    });

    // The namespace: a long-lived holder process, unshared with private propagation.
    const holder = spawnLong(['unshare', '-m', '--propagation', 'private', 'sleep', '900'], join(dir, 'holder.log'));
    const holderPid = holder.pid;
    if (holderPid === undefined) throw new Error('could not start the namespace holder (unshare)');
    cleanup.push(`kill the namespace holder (pid ${holderPid})`, () => stopChild(holder, 2_000));
    const hostNs = await readlink('/proc/self/ns/mnt');
    let nsId = hostNs;
    for (let i = 0; nsId === hostNs; i++) {
      if (!isRunning(holder)) throw new Error(`unshare exited: ${holder.exitCode}`);
      if (i > 250) throw new Error('the namespace holder did not enter a new mount namespace within 5 s');
      await sleep(20);
      nsId = await readlink(`/proc/${holderPid}/ns/mnt`).catch(() => hostNs);
    }
    const ns = ['nsenter', `--mount=/proc/${holderPid}/ns/mnt`];
    // Undone before the holder dies: mounts under DIR inside the namespace (ballast's volumes,
    // dockerd's overlays), entered through the holder or, if it died, any process still there;
    // before that, any process other than the holder still in the namespace (containerd, shims).
    cleanup.push('unmount what is left under the bench dir inside the namespace', () => {
      const member = isRunning(holder) ? holderPid : (processesInNamespace(nsId)[0] ?? -1);
      return cleanUpUnder(dir, member);
    });
    cleanup.push('stop processes left in the namespace', async () => {
      const left = processesInNamespace(nsId, holderPid);
      if (!left.length) return;
      const signal = (pid: number, sig: NodeJS.Signals) => {
        try {
          process.kill(pid, sig);
        } catch {
          // exited meanwhile
        }
      };
      for (const pid of left) signal(pid, 'SIGTERM');
      await sleep(2_000);
      for (const pid of processesInNamespace(nsId, holderPid)) signal(pid, 'SIGKILL');
      throw new Error(`had to stop ${left.length} leftover process(es) in the namespace: ${left.join(', ')}`);
    });
    await run([...ns, 'mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run/docker/plugins'], { timeoutMs: 10_000 });
    await run([...ns, 'mount', '-t', 'tmpfs', '-o', 'mode=0700', 'tmpfs', '/run/containerd'], { timeoutMs: 10_000 });
    // dockerd 20.10 writes /etc/docker/key.json: keep it in the bench dir.
    await run([...ns, 'mount', '--bind', join(dir, 'etc-docker'), '/etc/docker'], { timeoutMs: 10_000 });

    // ballast first, so that it is stopped after dockerd (cleanup runs last-in first-out).
    log('starting ballast and dockerd in a private mount namespace...');
    const ballast = await startBallast(join(dir, 'ballast'), cleanup, { prefix: ns, socket: '/run/docker/plugins/ballast.sock' });

    const dockerSocket = join(dir, 'docker.sock');
    const dockerd = spawnLong(
      [
        ...ns,
        'dockerd',
        '--config-file', configFile,
        '--data-root', join(dir, 'data'),
        '--exec-root', join(dir, 'exec'),
        '--pidfile', join(dir, 'dockerd.pid'),
        '-H', `unix://${dockerSocket}`,
        '--bridge', 'none',
        '--iptables=false',
        '--ip-masq=false',
        '--cgroup-parent', cgroupParent,
      ],
      join(dir, 'dockerd.log'),
    );
    cleanup.push(`stop dockerd (pid ${dockerd.pid})`, () => stopChild(dockerd, 30_000));
    const env = new PrivateDocker(dir, holder, ballast, dockerd);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (!isRunning(dockerd)) throw new Error(`dockerd exited (${dockerd.exitCode ?? dockerd.signalCode}); see ${join(dir, 'dockerd.log')}`);
      if (existsSync(dockerSocket)) {
        const ok = await env.docker(['version', '--format', '{{.Server.Version}}'], 5_000).then(
          () => true,
          () => false,
        );
        if (ok) break;
      }
      if (Date.now() > deadline) throw new Error(`dockerd did not answer within 60 s; see ${join(dir, 'dockerd.log')}`);
      await sleep(100);
    }

    // busybox:local, made from the host's static busybox.
    const imageRoot = join(dir, 'image-root');
    await copyFile('/bin/busybox', join(imageRoot, 'bin/busybox'));
    for (const applet of ['sh', 'true']) await symlink('busybox', join(imageRoot, 'bin', applet));
    const tarball = join(dir, 'busybox.tar');
    await run(['tar', '-C', imageRoot, '-c', '-f', tarball, '.'], { timeoutMs: 30_000 });
    await env.docker(['import', tarball, 'busybox:local'], 60_000);
    return env;
  }
}
