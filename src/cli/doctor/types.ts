import type { Config } from '../../config/schema.js';
import type { Needs } from './needs.js';
import type { Probe } from './probe.js';

/** ok: checked and fine; info: worth knowing, not a failure; problem: fix it before volumes work. */
export type Level = 'ok' | 'info' | 'problem';

/** One line of the report: a problem says what is wrong and the command or setting that fixes it. */
export interface Finding {
  level: Level;
  /** What was checked: tools, daemons, kernel, identity, dirs, docker, clock. */
  area: string;
  message: string;
}

/** What every check gets: the configuration, what it needs of this host, and the host's probe. */
export interface DoctorContext {
  config: Config;
  needs: Needs;
  probe: Probe;
  /** Bound on each probe that can block (a file write on a shared root, a call to dockerd). */
  timeoutMs: number;
}

export type Check = (context: DoctorContext) => Promise<Finding[]>;

export const ok = (area: string, message: string): Finding => ({ level: 'ok', area, message });
export const info = (area: string, message: string): Finding => ({ level: 'info', area, message });
export const problem = (area: string, message: string): Finding => ({ level: 'problem', area, message });
