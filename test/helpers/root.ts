import { execFileSync } from 'node:child_process';

/**
 * Integration tests need root and real tools. They fail loudly, naming what is missing,
 * instead of skipping: `scripts/install-deps.sh` installs every one of them.
 */
export function requireRootAndTools(...tools: string[]): void {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (it attaches loop devices and mounts filesystems)');
  const missing = tools.filter((tool) => {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length) throw new Error(`this test needs ${missing.join(', ')}; run scripts/install-deps.sh`);
}
