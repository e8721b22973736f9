import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { CommandRunner, Filesystem, MountTable } from '../attach/index.js';
import type { Config } from '../config/schema.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { monotonicSeconds } from '../ownership/host-lease.js';
import { FenceFiles } from '../volumes/fence-files.js';
import { MountStateStore } from '../volumes/mount-state.js';

const POLL_MS = 500;

function isRunningWatchdog(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('fence-watchdog');
  } catch {
    return false;
  }
}

/**
 * Starts `ballast fence-watchdog` unless one already runs for this state dir. It is a
 * separate, detached process so that it fences even when the daemon is killed or stopped.
 */
export function startWatchdog(config: Config, configPath: string | undefined, log: Logger): void {
  const files = new FenceFiles(config.state_dir);
  try {
    if (isRunningWatchdog(Number(readFileSync(files.pidFile, 'utf8')))) return;
  } catch {
    // no pid file: start one
  }
  const args = [process.argv[1]!, ...(configPath ? ['--config', configPath] : []), 'fence-watchdog'];
  const child = spawn(process.execPath, args, { detached: true, stdio: 'ignore' });
  child.unref();
  if (child.pid) writeFileSync(files.pidFile, String(child.pid));
  log.info('fence watchdog started', { pid: child.pid });
}

/**
 * The watchdog: while this host has volumes mounted, it watches the daemon's heartbeat
 * (advanced after every lease renewal) on its own monotonic clock. When the heartbeat has
 * not moved for lease.fence_after - the daemon is dead, stopped or cannot reach the
 * backend - it shuts down the filesystem of every mounted volume, before another host may
 * take them over (lease.seconds). It exits when nothing is mounted.
 */
export async function runWatchdog(config: Config, log: Logger): Promise<void> {
  const files = new FenceFiles(config.state_dir);
  const state = new MountStateStore(config.state_dir);
  const exec = new CommandRunner(log, config.timeouts.command_seconds * 1000);
  const filesystem = new Filesystem(exec, log, { slowMs: config.timeouts.filesystem_seconds * 1000 }, new MountTable());
  let lastBeat = await files.readBeat();
  let changedAt = monotonicSeconds();
  log.info('fence watchdog running', { pid: process.pid, fenceAfter: config.lease.fence_after });
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const beat = await files.readBeat();
    if (beat !== lastBeat) {
      lastBeat = beat;
      changedAt = monotonicSeconds();
    }
    const mounted = await state.load().catch(() => undefined);
    if (mounted && mounted.size === 0) break;
    const quiet = monotonicSeconds() - changedAt;
    if (!mounted || quiet <= config.lease.fence_after) continue;
    const fenced = await files.readFenced();
    let changed = false;
    for (const [name, volume] of mounted) {
      if (volume.fenced || fenced[name]) continue;
      const reason = `the daemon renewed no lease for ${Math.round(quiet)} s (stopped, hung or cut off from the backend)`;
      log.error('FENCING a volume: its filesystem is shut down, writes on this host now fail', { volume: name, reason });
      await filesystem.shutdown(volume.mountpoint, volume.device).catch((err) => log.error('fence: filesystem shutdown failed', { volume: name, error: errorMessage(err) }));
      fenced[name] = { at: new Date().toISOString(), reason };
      changed = true;
    }
    if (changed) await files.writeFenced(fenced);
  }
  log.info('fence watchdog exiting: nothing mounted');
  try {
    if (Number(readFileSync(files.pidFile, 'utf8')) === process.pid) rmSync(files.pidFile);
  } catch {
    // already gone
  }
}
