import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BALLAST_BIN, type BallastProcess } from '../lab/ballast.js';
import { callPlugin } from './plugin-client.js';

// What the secrets suites (secrets-logs.test.ts, secrets-shell.test.ts) share: real `ballast
// serve` processes whose stdout and stderr are kept, plugin calls whose replies are kept, all of
// it gathered in `outputs` for the search for secrets, in a work directory of the test file's
// own. `work` is a live binding, set by makeWork.

/** This run's random part of secret markers and names. */
export const tag = randomBytes(4).toString('hex');

/** Every text ballast gave out, by where it came from. */
export class Outputs {
  readonly texts: { source: string; text: string }[] = [];
  add(source: string, text: string): void {
    this.texts.push({ source, text });
  }
  sources(prefix = ''): number {
    return this.texts.filter((t) => t.source.startsWith(prefix)).length;
  }
}

export const outputs = new Outputs();
export let work: string;
export const daemons: { daemon: BallastProcess; name: string; stdout: string; stderr: string; closed: Promise<unknown> }[] = [];

export async function makeWork(): Promise<void> {
  work = await mkdtemp(join(tmpdir(), 'ballast-secrets-'));
}

/** Kills every daemon `serve` started, and its fence watchdog; the work directory is the caller's to remove. */
export async function killDaemons(): Promise<void> {
  for (const { daemon } of daemons) {
    await daemon.stop('SIGKILL');
    await daemon.stopWatchdog();
  }
}

/** `ballast serve` with its stdout and stderr kept (BallastProcess.start drops stdout); false when it exits instead. */
export async function serve(daemon: BallastProcess, name: string): Promise<boolean> {
  const child = spawn(process.execPath, [BALLAST_BIN, '--config', daemon.configPath, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
  daemon.child = child;
  const entry = { daemon, name, stdout: '', stderr: '', closed: new Promise((resolve) => child.once('close', resolve)) };
  daemons.push(entry);
  child.stdout.on('data', (c: Buffer) => (entry.stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (entry.stderr += c.toString()));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return false;
    if ((await daemon.logs()).some((l) => l.message === 'serving the Docker volume plugin protocol')) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`ballast ${name} did not start: ${entry.stderr}`);
}

/** A plugin call, its reply kept for the search; Err undefined on success. */
export async function call(daemon: BallastProcess, method: string, body: object): Promise<{ Err?: string } & Record<string, unknown>> {
  const reply = await callPlugin(daemon.socket, method, body);
  outputs.add(`reply ${method} ${JSON.stringify(body)}`, JSON.stringify(reply.body));
  return { ...reply.body, Err: reply.body.Err || undefined };
}

export function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    const stat = statSync(path, { throwIfNoEntry: false });
    return !stat ? [] : stat.isDirectory() ? walk(path) : stat.isFile() && stat.size < 1 << 20 ? [path] : [];
  });
}
