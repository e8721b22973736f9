import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { CommandRunner, Filesystem, MountTable } from '../attach/index.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { monotonicSeconds } from '../ownership/host-lease.js';
import { FenceFiles, type Heartbeat } from '../volumes/fence-files.js';
import { fencedAtArray, freezeWaitFor, shutDownFenced } from '../volumes/lease-upkeep.js';
import { MountStateStore } from '../volumes/mount-state.js';

const POLL_MS = 500;

/**
 * Seconds since the daemon's last renewal as the watchdog can best tell: from the renewal's own
 * start when the beat carries it (the daemon and the watchdog share CLOCK_MONOTONIC), else from
 * when the watchdog saw the beat change (a beat of an older daemon), which is up to a poll late.
 */
export function quietSeconds(beat: Heartbeat | undefined, sawChangeAt: number, now: number): number {
  // A renewedAt ahead of now is another boot's (the monotonic clock restarts at boot).
  const renewedAt = beat?.renewedAt !== undefined && beat.renewedAt <= now ? beat.renewedAt : sawChangeAt;
  return now - renewedAt;
}

/** How long to sleep before looking again: a poll, or less when the fence falls due sooner. */
export function nextLookMs(quiet: number, fenceAfter: number): number {
  return Math.min(POLL_MS, Math.max(20, Math.ceil((fenceAfter - quiet) * 1000) + 5));
}

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
  let sleepMs = POLL_MS;
  log.info('fence watchdog running', { pid: process.pid, fenceAfter: config.lease.fence_after });
  for (;;) {
    await new Promise((r) => setTimeout(r, sleepMs));
    const beat = await files.readBeat();
    if (beat?.seq !== lastBeat?.seq) {
      lastBeat = beat;
      changedAt = monotonicSeconds();
    }
    const mounted = await state.load().catch(() => undefined);
    if (mounted && mounted.size === 0) break;
    const quiet = quietSeconds(lastBeat, changedAt, monotonicSeconds());
    sleepMs = nextLookMs(quiet, config.lease.fence_after);
    if (!mounted || quiet <= config.lease.fence_after) continue;
    const fenced = await files.readFenced();
    const due = [...mounted].filter(([name, volume]) => !volume.fenced && !fenced[name]);
    if (due.length === 0) continue;
    const reason = `the daemon renewed no lease for ${Math.round(quiet)} s (stopped, hung or cut off from the backend)`;
    // All at once: on storage that does not answer each shutdown may wait seconds, and the last must not come late.
    await Promise.all(
      due.map(async ([name, volume]) => {
        await shutDownFenced(filesystem, log, { name, volume, reason, freezeWaitMs: freezeWaitFor(volume, config.lease.seconds, quiet) });
        fenced[name] = { at: new Date().toISOString(), reason };
        // Other hosts may take the volume lease.seconds after the renewal: a fence after that came too late.
        const late = quietSeconds(lastBeat, changedAt, monotonicSeconds()) - config.lease.seconds;
        if (late > 0 && !fencedAtArray(volume)) log.error('fence came after the lease expired: another host may have taken the volume over meanwhile (this host was starved of CPU or the shutdown hung)', { volume: name, lateMs: Math.round(late * 1000) });
      }),
    );
    await files.writeFenced(fenced);
  }
  log.info('fence watchdog exiting: nothing mounted');
  try {
    if (Number(readFileSync(files.pidFile, 'utf8')) === process.pid) rmSync(files.pidFile);
  } catch {
    // already gone
  }
}
