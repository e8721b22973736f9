import { release } from 'node:os';
import type { Config } from '../../config/schema.js';
import { CommandRunner } from '../../exec.js';
import { silentLogger } from '../../log.js';
import { checkClock } from './clock.js';
import { checkDaemons } from './daemons.js';
import { checkDirs } from './dirs.js';
import { checkDocker } from './docker.js';
import { checkIdentity } from './identity.js';
import { checkKernel } from './kernel.js';
import { checkSharedMounts } from './mounts.js';
import { needsOf } from './needs.js';
import { HostProbe, type Probe } from './probe.js';
import { checkTools } from './tools.js';
import type { Check, DoctorContext, Finding } from './types.js';

export type { Finding } from './types.js';

/** Each probe that can block (a write on a shared root, a call to dockerd) gives up after this. */
export const DOCTOR_TIMEOUT_MS = 5_000;

/** In report order. */
export const CHECKS: readonly Check[] = [checkTools, checkDaemons, checkKernel, checkIdentity, checkDirs, checkClock, checkSharedMounts, checkDocker];

/** Runs every check (concurrently) and returns the findings in report order. */
export async function diagnose(config: Config, probe: Probe, timeoutMs = DOCTOR_TIMEOUT_MS): Promise<Finding[]> {
  const context: DoctorContext = { config, needs: needsOf(config), probe, timeoutMs };
  return (await Promise.all(CHECKS.map((check) => check(context)))).flat();
}

export function formatFinding(finding: Finding): string {
  return `${finding.level}: ${finding.area}: ${finding.message}`;
}

/** `ballast doctor`: prints the findings; 0 when no problem was found, 1 otherwise. */
export async function runDoctor(config: Config, write: (line: string) => void, probe: Probe = hostProbe()): Promise<number> {
  const needs = needsOf(config);
  const profiles = Object.entries(config.profiles).map(([name, p]) => `${name} (${p.backend})`);
  write(`ballast doctor: profiles ${profiles.join(', ')}; transports ${[...needs.transports].join(', ') || 'none'}`);
  const findings = await diagnose(config, probe);
  for (const finding of findings) write(formatFinding(finding));
  const problems = findings.filter((f) => f.level === 'problem').length;
  write(problems ? `${problems} problem${problems === 1 ? '' : 's'} found` : 'no problems found');
  return problems ? 1 : 0;
}

function hostProbe(): Probe {
  // PATH as the daemon's commands see it: they inherit this process's environment.
  return new HostProbe({ exec: new CommandRunner(silentLogger()), path: process.env.PATH ?? '', kernelRelease: release() });
}
