import { loadavg } from 'node:os';

/** The machine's load averages, for a VM bench's header and footer. */
export const loadAverages = () => loadavg().map((l) => l.toFixed(2)).join(' ');

/** The JSON lines of a daemon's log (anything else skipped). */
export function* logEntries(log: string): Generator<Record<string, unknown>> {
  for (const line of log.split('\n')) {
    try {
      yield JSON.parse(line) as Record<string, unknown>;
    } catch {
      // not a log line
    }
  }
}

/** What one plugin call ran, from the daemon's debug log: commands over SSH (on an array host) and local ones. */
export interface CallCommands {
  ssh: number;
  sshMs: number;
  local: number;
  localMs: number;
  /** The call's own duration in the daemon. */
  wallMs: number;
}

/**
 * The commands each finished, successful plugin call ran, grouped by `figure(request line)`: the
 * bench's name for that call ("new", "lio_existing", ...), or undefined for a call it does not time.
 */
export function commandsPerCall(log: string, figure: (request: Record<string, unknown>) => string | undefined): Map<string, CallCommands[]> {
  const pending = new Map<number, CallCommands>();
  const calls = new Map<string, CallCommands[]>();
  for (const entry of logEntries(log)) {
    const reqId = entry.reqId;
    if (typeof reqId !== 'number') continue;
    const stats = pending.get(reqId) ?? { ssh: 0, sshMs: 0, local: 0, localMs: 0, wallMs: 0 };
    pending.set(reqId, stats);
    if (entry.message === 'command') {
      const ms = Number(entry.durationMs) || 0;
      if (entry.target) {
        stats.ssh++;
        stats.sshMs += ms;
      } else {
        stats.local++;
        stats.localMs += ms;
      }
    } else if (entry.message === 'request' && typeof entry.durationMs === 'number') {
      pending.delete(reqId);
      const key = entry.err ? undefined : figure(entry);
      if (!key) continue;
      stats.wallMs = entry.durationMs;
      calls.set(key, [...(calls.get(key) ?? []), stats]);
    }
  }
  return calls;
}
