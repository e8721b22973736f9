import { readFileSync, rmSync, writeFileSync } from 'node:fs';

// A lock file naming its holder's PID, for test suites in different jest workers (processes).
// A lock whose holder is gone (a killed jest worker) is taken over.

/** Whether a live process holds the lock. */
export function pidLockHeld(path: string): boolean {
  try {
    const pid = Number(readFileSync(path, 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return false;
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the lock for this process if it is free (or its holder is dead); false if another holds it. */
export function tryPidLock(path: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (pidLockHeld(path)) return false;
    rmSync(path, { force: true });
  }
  return false;
}

export function releasePidLock(path: string): void {
  rmSync(path, { force: true });
}
