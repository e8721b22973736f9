import { DockerHarness, type HarnessOptions } from './docker-harness.js';

// A lab dockerd (docker-harness.ts) as jest runs it: one per test file, failures carrying the logs.

/**
 * Wraps a test body so that any failure (a plain expect() included) carries the tail of
 * ballast's and dockerd's logs, unless the message already has them.
 */
export function withDiagnostics(harness: () => { diagnostics(): Promise<string> } | undefined, body: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await body();
    } catch (err) {
      const h = harness();
      if (h && err instanceof Error && !err.message.includes('--- ballast log tail')) {
        err.message += `\n${await h.diagnostics().catch((e: Error) => `(no diagnostics: ${e.message})`)}`;
      }
      throw err;
    }
  };
}

/** A long-running container command that exits promptly on SIGTERM (busybox sh as PID 1 ignores it otherwise). */
export function loopScript(body: string, intervalSeconds = 0.2): string {
  return `trap 'exit 0' TERM; while true; do ${body}; sleep ${intervalSeconds} & wait $!; done`;
}

/**
 * One private dockerd for a whole test file: started in beforeAll, torn down (and checked
 * for leftovers) in afterAll. `it` is test() with the logs' tails added to any failure.
 */
export function dockerSuite(options: HarnessOptions, timeoutMs: number) {
  const suite = {
    harness: undefined as DockerHarness | undefined,
    /** The running harness; throws if beforeAll has not started it. */
    get h(): DockerHarness {
      if (!suite.harness) throw new Error('the docker harness is not running');
      return suite.harness;
    },
    it: (name: string, body: () => Promise<void>, timeout = timeoutMs) => test(name, withDiagnostics(() => suite.harness, body), timeout),
  };
  beforeAll(async () => {
    suite.harness = await DockerHarness.start(options);
  }, 180_000);
  afterAll(async () => {
    await suite.harness?.teardownAndCheck();
  }, 180_000);
  return suite;
}
