// The loop shared by the scenarios' attacher drivers (fc-attach.mjs, nvme-attach.mjs): one
// command from argv, or (no argv) one per line of stdin, each answered with key=value lines (ok,
// ms, the handler's fields or error) and a line "." so a bash coprocess can read them: one node
// start for a whole scenario (seconds each under TCG).
import { createInterface } from 'node:readline';

export const src = process.env.BALLAST_SRC;

function print(fields) {
  for (const [k, v] of Object.entries(fields)) process.stdout.write(`${k}=${String(v).replace(/\s+/g, ' ').trim()}\n`);
  process.stdout.write('.\n');
}

/** Imports this checkout's built module, or answers every command with why it cannot. */
export async function importBuilt(relative) {
  try {
    return await import(`${src}/dist/${relative}`);
  } catch (err) {
    print({ ok: 0, ms: 0, error: `cannot load ${src}/dist/${relative} (npm run build): ${err}` });
    process.exit(2);
  }
}

/** Runs `handlers[command](...args)` for each command; a handler returns the fields to print. */
export async function serveCommands(log, handlers) {
  const run = async ([command, ...args]) => {
    log.info('command', { command: [command, ...args] });
    const started = performance.now();
    let fields;
    try {
      const handler = handlers[command];
      if (!handler) throw new Error(`unknown command ${command}`);
      fields = { ok: 1, ms: Math.round(performance.now() - started), ...(await handler(...args)) };
      fields.ms = Math.round(performance.now() - started);
    } catch (err) {
      fields = { ok: 0, ms: Math.round(performance.now() - started), error: err instanceof Error ? err.message : String(err) };
      log.warn('command failed', { error: String(err?.stack ?? err) });
    }
    print(fields);
  };
  if (process.argv.length > 2) await run(process.argv.slice(2));
  else for await (const line of createInterface({ input: process.stdin })) if (line.trim()) await run(line.trim().split(/\s+/));
  // The file transport writes asynchronously: let it finish before node exits.
  await new Promise((resolve) => {
    log.on('finish', resolve);
    log.end();
    setTimeout(resolve, 2_000).unref();
  });
}
