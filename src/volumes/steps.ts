import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';

/** One step of a sequence that must finish or roll back by itself. */
export interface Step {
  name: string;
  run: () => Promise<void>;
  /** Reverses `run`; called only if `run` succeeded and a later step failed. */
  undo?: () => Promise<unknown>;
}

/**
 * A failpoint for the crash tests (test/integration/crash-between-steps.test.ts): with
 * BALLAST_FAILPOINT_CRASH_AFTER=<step name> in its environment the daemon kills itself
 * (SIGKILL, as a crash) right after that step of a Mount or an Unmount completes, or ('freeze')
 * with a snapshot's filesystem frozen. Unset in
 * production: then this is one string comparison per step.
 */
export function crashPointReached(step: string): void {
  if (process.env.BALLAST_FAILPOINT_CRASH_AFTER === step) process.kill(process.pid, 'SIGKILL');
}

/**
 * Runs steps in order. When one fails, the completed steps are undone in reverse order
 * (each undo failure is logged, not thrown) and the original error is rethrown. Docker
 * never sends Unmount for a failed Mount, so a Mount must leave nothing behind.
 */
export async function runSteps(steps: readonly Step[], log: Logger): Promise<StepTimes> {
  const done: Step[] = [];
  const times: StepTimes = [];
  for (const step of steps) {
    try {
      const started = performance.now();
      await step.run();
      times.push({ step: step.name, ms: roundMs(performance.now() - started) });
      done.push(step);
      crashPointReached(step.name);
    } catch (err) {
      log.warn('step failed; rolling back', { step: step.name, error: errorMessage(err) });
      for (const completed of done.reverse()) {
        if (!completed.undo) continue;
        try {
          await completed.undo();
        } catch (undoErr) {
          log.error('rollback step failed', { step: completed.name, error: errorMessage(undoErr) });
        }
      }
      throw err;
    }
  }
  return times;
}

/** How long each step took, in order (an array: the JSON log sorts object keys), read by the bench. */
export type StepTimes = { step: string; ms: number }[];

export const roundMs = (ms: number) => Math.round(ms * 10) / 10;
