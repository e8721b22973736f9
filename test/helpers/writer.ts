import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

// A writer that appends numbered lines to a file on a volume, fsyncing each one, and records
// the last acknowledged (fsynced) number in a file outside the volume. It stops at the first
// error and records it: after a fence, that error is EIO.
const SCRIPT = `
const fs = require('fs');
const [file, ack, tag] = process.argv.slice(1);
let seq = 0;
const fd = fs.openSync(file, 'a');
const tick = () => {
  try {
    fs.writeSync(fd, tag + ' ' + (seq + 1) + '\\n');
    fs.fsyncSync(fd);
    seq += 1;
    fs.writeFileSync(ack, JSON.stringify({ seq, at: Date.now() }));
    setTimeout(tick, 10);
  } catch (err) {
    fs.writeFileSync(ack, JSON.stringify({ seq, at: Date.now(), error: err.code || String(err) }));
    process.exit(0);
  }
};
tick();
`;

export interface WriterStatus {
  seq: number;
  at: number;
  error?: string;
}

export class Writer {
  readonly child: ChildProcess;

  constructor(file: string, private readonly ackFile: string, tag: string) {
    this.child = spawn(process.execPath, ['-e', SCRIPT, file, ackFile, tag], { stdio: 'ignore' });
  }

  status(): WriterStatus {
    try {
      return JSON.parse(readFileSync(this.ackFile, 'utf8')) as WriterStatus;
    } catch {
      return { seq: 0, at: 0 };
    }
  }

  async waitFor(check: (s: WriterStatus) => boolean, timeoutMs: number, what: string): Promise<WriterStatus> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const s = this.status();
      if (check(s)) return s;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`writer: ${what} did not happen within ${timeoutMs} ms (status ${JSON.stringify(this.status())})`);
  }

  stop(): void {
    if (this.running) this.child.kill('SIGKILL');
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Stops the writer and resolves once it has exited (at once if it already has). */
  async stopAndWait(): Promise<void> {
    if (!this.running) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }
}
