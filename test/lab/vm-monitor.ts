import { createConnection, type Socket } from 'node:net';

// The monitor of a lab VM's qemu (vm.ts, the onMonitor option): QMP over a Unix socket in the run dir.

/** The running VM's qemu monitor. */
export interface VmMonitor {
  /** Runs one HMP command ("device_del vd1") and returns what it printed ("" or "OK" when it worked). */
  hmp(command: string): Promise<string>;
}

/**
 * A QMP client that runs HMP commands (human-monitor-command), one at a time. It connects on
 * first use, waiting for qemu to create the socket; QMP events are ignored.
 */
export class QmpMonitor implements VmMonitor {
  private socket: Promise<Socket> | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private waiting: ((reply: { return?: unknown; error?: { desc: string } }) => void) | undefined;
  private closed = false;

  constructor(private readonly path: string) {}

  hmp(command: string): Promise<string> {
    const run = this.queue.then(async () => {
      const reply = await this.send({ execute: 'human-monitor-command', arguments: { 'command-line': command } });
      return String(reply ?? '').replace(/\r\n/g, '\n').trim();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.closed = true;
    void this.socket?.then((s) => s.destroy(), () => undefined);
  }

  private async send(message: object): Promise<unknown> {
    this.socket ??= this.connect();
    const socket = await this.socket;
    return this.exchange(socket, message);
  }

  private exchange(socket: Socket, message: object): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.waiting = (reply) => (reply.error ? reject(new Error(`QMP: ${reply.error.desc}`)) : resolve(reply.return));
      socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  private async connect(): Promise<Socket> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.closed) throw new Error('the VM has stopped');
      const socket = await new Promise<Socket | undefined>((resolve) => {
        const s = createConnection(this.path);
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      });
      if (socket) {
        let buffer = '';
        let greeted: () => void = () => undefined;
        const greeting = new Promise<void>((resolve) => (greeted = resolve));
        socket.on('data', (chunk: Buffer) => {
          buffer += chunk.toString();
          for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
            const line = JSON.parse(buffer.slice(0, nl)) as { QMP?: unknown; event?: string; return?: unknown; error?: { desc: string } };
            buffer = buffer.slice(nl + 1);
            if (line.QMP) greeted();
            else if (!line.event) this.waiting?.(line);
          }
        });
        socket.on('close', () => this.waiting?.({ error: { desc: 'the monitor connection closed (the VM stopped)' } }));
        await greeting;
        await this.exchange(socket, { execute: 'qmp_capabilities' });
        return socket;
      }
      if (Date.now() > deadline) throw new Error(`qemu's monitor ${this.path} did not come up`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
