// Lock-step between two VMs through files in $SHARE (a host directory both mount over 9p with
// cache=none, so every check asks the host). Used by the NFS scenarios' node scripts.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Share {
  constructor(dir, me, other) {
    this.dir = join(dir, 'sync');
    this.me = me;
    this.other = other;
    mkdirSync(this.dir, { recursive: true });
  }

  /** Publishes TAG from this VM, with optional content (renamed into place: never seen half-written). */
  post(tag, content = '') {
    const file = join(this.dir, `${tag}.${this.me}`);
    writeFileSync(`${file}.tmp`, content);
    renameSync(`${file}.tmp`, file);
  }

  /** Waits (bounded) for the other VM's TAG and returns its content. */
  async waitFor(tag, timeoutMs = 120_000) {
    const file = join(this.dir, `${tag}.${this.other}`);
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(file)) {
      if (Date.now() > deadline) throw new Error(`${this.me}: waited ${timeoutMs / 1000} s for ${this.other}'s ${tag}`);
      await sleep(1);
    }
    return readFileSync(file, 'utf8');
  }

  posted(tag) {
    return existsSync(join(this.dir, `${tag}.${this.other}`));
  }

  /** Both VMs pass TAG together (to within one poll). */
  async barrier(tag, timeoutMs) {
    this.post(tag);
    await this.waitFor(tag, timeoutMs);
  }

  /** This VM's results, for the host test. */
  report(name, data) {
    writeFileSync(join(this.dir, '..', `${name}-${this.me}.json`), `${JSON.stringify(data, null, 1)}\n`);
  }
}
