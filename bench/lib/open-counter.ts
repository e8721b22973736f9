// Counts the opens of one directory and of the files in it by every process on the machine
// (inotify IN_OPEN), for reads the bench cannot count from inside the daemons: an opendir for
// each listing, an open for each file read. Node has no IN_OPEN, so a small python3 script
// (libc through ctypes) watches; it is stopped by its own PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { DIE_WITH_PARENT, isRunning, stopChild, withTimeout } from './proc.js';

const SCRIPT = String.raw`
import ctypes, json, os, select, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
IN_OPEN, IN_Q_OVERFLOW, IN_ISDIR = 0x20, 0x4000, 0x40000000
fd = libc.inotify_init1(os.O_NONBLOCK)
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_OPEN) < 0:
    sys.exit('inotify: errno %d' % ctypes.get_errno())
counts, dir_opens, overflow, counting = {}, 0, False, False
print('ready', flush=True)
while True:
    ready, _, _ = select.select([fd, sys.stdin], [], [])
    if fd in ready:
        data = os.read(fd, 1 << 20)
        i = 0
        while i < len(data):
            _, mask, _, n = struct.unpack_from('iIII', data, i)
            name = data[i + 16:i + 16 + n].rstrip(b'\0').decode()
            i += 16 + n
            if mask & IN_Q_OVERFLOW: overflow = True
            if not counting or not mask & IN_OPEN: continue
            if mask & IN_ISDIR and not name: dir_opens += 1
            elif not mask & IN_ISDIR: counts[name] = counts.get(name, 0) + 1
    if sys.stdin in ready:
        line = sys.stdin.readline().strip()
        if not line: break
        if line == 'start': counts, dir_opens, overflow, counting = {}, 0, False, True
        if line == 'stop':
            counting = False
            print(json.dumps({'dirOpens': dir_opens, 'fileOpens': counts, 'overflow': overflow}), flush=True)
`;

export interface OpenCounts {
  /** Opens of the directory itself: listings, and the fsync after each atomic replace. */
  dirOpens: number;
  /** Opens of each file in it, by name. */
  fileOpens: Record<string, number>;
  /** The kernel dropped events: the counts are low. */
  overflow: boolean;
}

export class OpenCounter {
  private constructor(
    private readonly child: ChildProcess,
    private readonly lines: AsyncIterator<string>,
  ) {}

  static async watch(dir: string): Promise<OpenCounter> {
    const [file, ...args] = [...DIE_WITH_PARENT, 'python3', '-c', SCRIPT, dir];
    const child = spawn(file!, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    const counter = new OpenCounter(child, createInterface({ input: child.stdout! })[Symbol.asyncIterator]());
    const first = await withTimeout(counter.lines.next(), 10_000, 'the inotify counter to start').catch(async (err: unknown) => {
      await counter.close();
      throw err;
    });
    if (first.value !== 'ready') {
      await counter.close();
      throw new Error(`the inotify counter did not start (python3 with ctypes needed): ${String(first.value)}`);
    }
    return counter;
  }

  start(): void {
    this.child.stdin!.write('start\n');
  }

  async stop(): Promise<OpenCounts> {
    this.child.stdin!.write('stop\n');
    const line = await withTimeout(this.lines.next(), 10_000, 'the inotify counts');
    return JSON.parse(String(line.value)) as OpenCounts;
  }

  async close(): Promise<void> {
    if (!isRunning(this.child)) return;
    this.child.stdin!.end();
    await stopChild(this.child, 2_000);
  }
}
