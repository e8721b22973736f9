// Randomized fault testing across two VM-lab hosts (nfs-random-faults.test.ts,
// iscsi-random-faults.test.ts, fc-random-faults.test.ts). One file, three roles:
//
//   node random-faults.mjs agent       in each VM: runs that host's ballast daemon and writers and
//                                      executes the commands it is sent, one at a time
//   node random-faults.mjs coordinate  on the host: draws the steps from the seed, sends each to
//                                      the VM that acts (or acts itself: freezing a whole VM, the
//                                      array), settles, then checks the volumes' images on disk
//
// They talk through files in $SHARE (a host directory both VMs mount over 9p, which no network
// fault touches): cmd/<vm>-<n>.json and res/<vm>-<n>.json. While a host has a volume mounted, a
// writer appends "<session> <n>" lines to /log on it, each fsynced, and records the last
// acknowledged n in acks/<session>. The checker then proves from each image's content that no
// acknowledged line was lost and that sessions never interleave (once a later session wrote,
// no earlier one wrote again: never two writers at once). Steps are drawn by a seeded PRNG from
// the actions the hosts' current state allows; the same seed gives the same choices wherever the
// outcomes (a Mount refused or not) are the same.
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';

const env = process.env;
const SHARE = env.SHARE;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now();

function writeJson(path, value) {
  writeFileSync(`${path}.tmp`, JSON.stringify(value));
  renameSync(`${path}.tmp`, path);
}

function readJson(path, fallback) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return fallback;
  }
}

// ---------------------------------------------------------------- agent (in a VM)

const WRITER = `
mp=$1 tag=$2 ack=$3
[ -p /tmp/writer.fifo ] || mkfifo /tmp/writer.fifo
exec 9<>/tmp/writer.fifo
i=0
while :; do
  i=$((i + 1))
  if out=$( { echo "$tag $i" >> "$mp/log" && sync "$mp/log"; } 2>&1 ); then
    echo "$i" > "$ack"
  else
    echo "$i $out" > "$ack.err"
    exit 0
  fi
  read -r -t 0.25 -u 9
done
`;

const FENCE_LOG = `cat "$BALLAST_VM_LOGS"/*.log 2>/dev/null | jq -R -r 'fromjson? | select((.message // "") | test("^(FENCING|fence)")) | [.timestamp[11:23], (.volume // .target), .message, (.waitedMs // .freezeWaitMs // ""), (.reason // .error // "")] | map(tostring) | join(" ")' | tail -60`;

async function agent() {
  const name = env.BALLAST_VM_NAME;
  const run = env.BALLAST_RUN;
  const config = join(run, 'config.yml');
  const socket = join(run, 'ballast.sock');
  const logFile = join(env.BALLAST_VM_LOGS, 'ballast.log');
  let daemon;
  const writers = new Map(); // session -> ChildProcess

  const call = (method, body, timeoutMs = 150_000) =>
    new Promise((resolve) => {
      const req = request({ socketPath: socket, method: 'POST', path: `/${method}`, timeout: timeoutMs }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          try {
            resolve(JSON.parse(text));
          } catch {
            resolve({ Err: `not JSON: ${text.slice(0, 200)}` });
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no reply within ${timeoutMs} ms`)));
      req.on('error', (err) => resolve({ Err: `${method}: ${err.message}` }));
      req.end(JSON.stringify(body));
    });

  const startDaemon = async () => {
    rmSync(socket, { force: true }); // a killed daemon leaves its socket file behind
    appendFileSync(logFile, `=== ballast serve at ${new Date().toISOString()}\n`);
    const fd = openSync(logFile, 'a');
    daemon = spawn(process.execPath, [env.BALLAST_CLI, '--config', config, 'serve'], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const exited = new Promise((r) => daemon.once('exit', r));
    for (let i = 0; i < 1200 && !existsSync(socket); i++) {
      if (daemon.exitCode !== null) throw new Error('ballast exited at start (see ballast.log)');
      await sleep(100);
    }
    if (!existsSync(socket)) throw new Error('ballast did not start within 120 s');
    daemon.exited = exited;
  };

  const stopWriter = async (session) => {
    const w = writers.get(session);
    if (!w) return true;
    writers.delete(session);
    // The whole process group: a bash writer's subshell and its sync hold the log open after
    // bash itself died, and the Unmount that follows then finds the filesystem busy.
    const groupAlive = () => {
      try {
        process.kill(-w.pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    if (groupAlive()) process.kill(-w.pid, 'SIGKILL');
    // A writer in uninterruptible sleep (fsync on a server it cannot reach) dies only later.
    for (const deadline = now() + 10_000; groupAlive(); await sleep(50)) if (now() > deadline) return false;
    return true;
  };

  const ops = {
    async start() {
      await startDaemon();
      return { pid: daemon.pid };
    },
    async create({ volume, size }) {
      const r = await call('VolumeDriver.Create', { Name: volume, Opts: { size } });
      return { err: r.Err || '' };
    },
    async mount({ volume, session }) {
      const r = await call('VolumeDriver.Mount', { Name: volume, ID: session });
      if (r.Err) return { err: r.Err };
      const w = spawn('bash', ['-c', WRITER, 'writer', r.Mountpoint, session, join(SHARE, 'acks', session)], { stdio: 'ignore', detached: true });
      writers.set(session, w);
      return { err: '', mountpoint: r.Mountpoint };
    },
    async unmount({ volume, session }) {
      const writerGone = await stopWriter(session);
      const r = await call('VolumeDriver.Unmount', { Name: volume, ID: session });
      return { err: r.Err || '', writerGone };
    },
    async kill9() {
      daemon.kill('SIGKILL');
      await daemon.exited;
      return {};
    },
    async sigstop() {
      daemon.kill('SIGSTOP');
      return {};
    },
    async sigcont() {
      daemon.kill('SIGCONT');
      return {};
    },
    async sh({ command, timeoutMs = 60_000, keepChars = 2000 }) {
      const r = spawnSync('bash', ['-c', command], { encoding: 'utf8', timeout: timeoutMs });
      return { rc: r.status, out: `${r.stdout}${r.stderr}`.trim().slice(-keepChars) };
    },
    async finish() {
      const stuck = [];
      for (const session of [...writers.keys()]) if (!(await stopWriter(session))) stuck.push(session);
      return { stuck };
    },
    async stop() {
      daemon.kill('SIGTERM');
      await Promise.race([daemon.exited, sleep(20_000)]);
      daemon.kill('SIGKILL');
      return {};
    },
  };

  for (let n = 1; ; n++) {
    const cmdFile = join(SHARE, 'cmd', `${name}-${n}.json`);
    while (!existsSync(cmdFile)) await sleep(100);
    const cmd = readJson(cmdFile);
    const t0 = now();
    let result;
    try {
      if (cmd.op === 'exit') {
        writeJson(join(SHARE, 'res', `${name}-${n}.json`), { ok: true, ms: 0 });
        return;
      }
      result = { ok: true, ...(await ops[cmd.op](cmd)) };
    } catch (err) {
      result = { ok: false, error: String(err?.stack ?? err) };
    }
    writeJson(join(SHARE, 'res', `${name}-${n}.json`), { ...result, ms: now() - t0 });
  }
}

// ---------------------------------------------------------------- coordinator (on the host)

/** mulberry32: a tiny, well-known seeded PRNG (as in lease-property.test.ts). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VMS = ['vm1', 'vm2'];
const other = (vm) => (vm === 'vm1' ? 'vm2' : 'vm1');

/**
 * What each backend adds: the shell commands of its network faults (run inside the VM) and the
 * faults of its own. NFS: the VM is cut off from the NFS server. iSCSI: cut off from the array
 * (both portals and its SSH), one path lost (one portal), the array (tgtd) restarted. FC: cut off
 * from the array (both FCoE ports down, and the SSH over IP beside them), one path lost (the
 * second link's FCoE port down); each host reaches the array on a link of its own ($FC_PEER_IP,
 * expanded in the VM).
 */
function backendFaults(backend) {
  const server = backend === 'fc' ? '$FC_PEER_IP' : '10.0.2.2';
  const drop = (match) =>
    `modprobe -a nf_tables nft_compat x_tables 2>/dev/null; iptables -I OUTPUT -d ${server} ${match} -j DROP && iptables -I INPUT -s ${server} ${match.replace('--dport', '--sport')} -j DROP`;
  const undrop = (match) => `iptables -D OUTPUT -d ${server} ${match} -j DROP; iptables -D INPUT -s ${server} ${match.replace('--dport', '--sport')} -j DROP`;
  const faults = { cut: drop(''), heal: undrop(''), pathLabel: '', freeze: true };
  if (backend === 'iscsi') {
    const path = `-p tcp --dport ${env.ISCSI_PORT2}`;
    faults.pathDown = drop(path);
    faults.pathUp = undrop(path);
    faults.pathLabel = `portal port ${env.ISCSI_PORT2} dropped`;
  }
  if (backend === 'fc') {
    const fcoe = (nics, enabled) => `. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh" && nics=($FC_NICS) && for n in ${nics}; do fcoe_set "$n" ${enabled} || exit 1; done`;
    faults.cut = `${drop('')} && ${fcoe('"${nics[@]}"', 0)}`;
    faults.heal = `(${fcoe('"${nics[@]}"', 1)}); ${undrop('')}`;
    faults.pathDown = fcoe('"${nics[1]}"', 0);
    faults.pathUp = fcoe('"${nics[1]}"', 1);
    faults.pathLabel = "the second link's FCoE port disabled";
    // No whole-VM freeze on FC: in the first CI run (2026-12-06), a host VM frozen twice in a row
    // (35 s, then 16 s) while it held a volume answered nothing for 240 s afterwards; not yet
    // understood (its console was lost with it). A daemon's SIGSTOP, kill -9 and the cut stay.
    faults.freeze = false;
  }
  return faults;
}

async function coordinate() {
  const seed = Number(env.BALLAST_RANDOM_FAULTS_SEED);
  const steps = Number(env.BALLAST_RANDOM_FAULTS_STEPS);
  const backend = env.BACKEND;
  const volumes = env.VOLUMES.split(',');
  const net = backendFaults(backend);
  const random = rng(seed);
  const pick = (items) => items[Math.floor(random() * items.length)];
  const between = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
  const started = now();
  const trace = [];
  const faults = {}; // kind -> count
  let stepLabel = 'setup';
  const log = (line) => {
    const text = `[${((now() - started) / 1000).toFixed(1)} s] ${stepLabel}: ${line}`;
    trace.push(text);
    process.stdout.write(`${text}\n`);
  };
  const count = (kind) => (faults[kind] = (faults[kind] ?? 0) + 1);

  const seq = { vm1: 0, vm2: 0 };
  const qemuPid = (vm) => Number(readFileSync(join(SHARE, `${vm}.qemu-pid`), 'utf8'));
  async function send(vm, cmd, timeoutMs = 240_000) {
    const n = ++seq[vm];
    writeJson(join(SHARE, 'cmd', `${vm}-${n}.json`), cmd);
    const resFile = join(SHARE, 'res', `${vm}-${n}.json`);
    const deadline = now() + timeoutMs;
    while (!existsSync(resFile)) {
      if (existsSync(join(SHARE, `${vm}.ended`))) throw new Error(`${vm} ended while running ${JSON.stringify(cmd)}`);
      if (now() > deadline) throw new Error(`${vm} did not answer ${JSON.stringify(cmd)} within ${timeoutMs / 1000} s`);
      await sleep(100);
    }
    const res = readJson(resFile);
    if (!res.ok) throw new Error(`${vm}: ${cmd.op} failed: ${res.error}`);
    return res;
  }

  // Host state as the coordinator knows it: what each VM's daemon, kernel and network are doing,
  // and which volumes its ballast has mounted (fenced or not: it holds the mount until Unmount).
  const host = Object.fromEntries(VMS.map((vm) => [vm, { daemon: 'up', frozen: false, cut: false, pathDown: false, mounted: new Map() }]));
  const active = []; // faults under way: { kind, end, vm, until } (host ms at which it ends)
  const sessions = []; // { session, vm, volume }
  let sessionCount = 0;
  let arrayRestarts = 0;
  let takeovers = 0;
  const unmountErrors = [];
  let lastHolder = {}; // volume -> vm of the last successful Mount
  const idle = (vm) => !host[vm].frozen && !host[vm].cut && host[vm].daemon === 'up';
  const down = (vm) => host[vm].frozen || host[vm].cut || host[vm].daemon !== 'up';
  const holderOf = (volume) => VMS.find((vm) => host[vm].mounted.has(volume));

  async function mount(vm, volume) {
    const session = `s${++sessionCount}-${vm}`;
    const res = await send(vm, { op: 'mount', volume, session });
    count('mount');
    if (res.err) {
      log(`mount ${volume} on ${vm}: refused in ${res.ms} ms: ${res.err.slice(0, 140)}`);
      return false;
    }
    const previous = holderOf(volume);
    if (previous && previous !== vm) takeovers += 1;
    host[vm].mounted.set(volume, session);
    sessions.push({ session, vm, volume });
    lastHolder[volume] = vm;
    log(`mount ${volume} on ${vm}: ok in ${res.ms} ms as ${session}${previous && previous !== vm ? ` (took over from ${previous}, which still has it mounted)` : ''}`);
    return true;
  }
  /** Moves `volume` (mounted first if nobody holds it), retrying while a just-healed host still refuses. */
  async function forcedMove(volume) {
    count('move');
    log(`no move or takeover was drawn: moving ${volume}`);
    let from = holderOf(volume);
    for (let attempt = 0; attempt < 6; attempt++) {
      if (attempt) await sleep(5_000);
      if (!from) {
        if (await mount('vm1', volume)) from = 'vm1';
        continue;
      }
      if (holderOf(volume) === from && !(await unmount(from, volume))) continue;
      if (await mount(other(from), volume)) return;
    }
    throw new Error(`the forced move of ${volume} did not succeed in 6 attempts`);
  }
  async function unmount(vm, volume) {
    const session = host[vm].mounted.get(volume);
    const res = await send(vm, { op: 'unmount', volume, session });
    count('unmount');
    log(`unmount ${volume} on ${vm} (${session}): ${res.err ? `Err in ${res.ms} ms: ${res.err.slice(0, 140)}` : `ok in ${res.ms} ms`}${res.writerGone ? '' : ' (writer still stuck)'}`);
    // Docker would call Unmount again: the volume stays this host's until one succeeds.
    if (res.err) unmountErrors.push(`${vm} ${volume}: ${res.err}`);
    else host[vm].mounted.delete(volume);
    return !res.err;
  }

  const ends = {
    async restart(vm) {
      const res = await send(vm, { op: 'start' });
      host[vm].daemon = 'up';
      log(`restart ${vm}'s daemon: ${res.ms} ms`);
    },
    async sigcont(vm) {
      await send(vm, { op: 'sigcont' });
      host[vm].daemon = 'up';
      log(`SIGCONT ${vm}'s daemon`);
    },
    async thaw(vm) {
      process.kill(qemuPid(vm), 'SIGCONT');
      host[vm].frozen = false;
      log(`thaw ${vm} (SIGCONT qemu)`);
    },
    async heal(vm) {
      const res = await send(vm, { op: 'sh', command: net.heal });
      host[vm].cut = false;
      log(`heal ${vm}'s network (rc ${res.rc})`);
    },
    async pathUp(vm) {
      const res = await send(vm, { op: 'sh', command: net.pathUp });
      host[vm].pathDown = false;
      log(`path back on ${vm} (rc ${res.rc})`);
    },
  };
  async function endFault(f) {
    active.splice(active.indexOf(f), 1);
    await ends[f.end](f.vm);
  }

  /** The actions the current state allows, with weights. */
  function choices() {
    const list = [];
    const add = (weight, label, act) => weight > 0 && list.push({ weight, label, act });
    const faulted = VMS.filter(down);
    for (const vm of VMS) {
      if (!idle(vm)) continue;
      for (const volume of volumes) {
        const holder = holderOf(volume);
        if (!host[vm].mounted.has(volume)) {
          // A takeover attempt is likelier while the holder is faulted: that is what the run is for.
          add(holder && down(holder) ? 1 : holder ? 0.5 : 2.5, `mount ${volume} ${vm}`, () => mount(vm, volume));
        } else {
          add(1.5, `unmount ${volume} ${vm}`, () => unmount(vm, volume));
          if (idle(other(vm)) && !host[other(vm)].mounted.has(volume)) {
            add(1.2, `move ${volume} ${vm}`, async () => {
              count('move');
              log(`move ${volume} from ${vm} to ${other(vm)}`);
              if (await unmount(vm, volume)) await mount(other(vm), volume);
            });
          }
        }
      }
      // Faults of a whole host: one host at a time, so that the other can take over.
      if (faulted.length === 0) {
        const holds = host[vm].mounted.size > 0 ? 1.5 : 0.15;
        add(0.6 * holds, `kill9 ${vm}`, async () => {
          await send(vm, { op: 'kill9' });
          host[vm].daemon = 'killed';
          count('kill9');
          active.push({ kind: 'kill9', end: 'restart', vm, until: now() + between(4, 20) * 1000 });
          log(`kill -9 ${vm}'s daemon (holds ${[...host[vm].mounted.keys()].join(',') || 'nothing'})`);
        });
        add(0.5 * holds, `sigstop ${vm}`, async () => {
          await send(vm, { op: 'sigstop' });
          host[vm].daemon = 'stopped';
          count('sigstop');
          active.push({ kind: 'sigstop', end: 'sigcont', vm, until: now() + between(2, 20) * 1000 });
          log(`SIGSTOP ${vm}'s daemon (holds ${[...host[vm].mounted.keys()].join(',') || 'nothing'})`);
        });
        add(net.freeze ? 0.5 * holds : 0, `freeze ${vm}`, async () => {
          process.kill(qemuPid(vm), 'SIGSTOP');
          host[vm].frozen = true;
          count('freeze');
          active.push({ kind: 'freeze', end: 'thaw', vm, until: now() + between(10, 40) * 1000 });
          log(`freeze ${vm} (SIGSTOP qemu; holds ${[...host[vm].mounted.keys()].join(',') || 'nothing'})`);
        });
        add(0.5 * holds, `partition ${vm}`, async () => {
          const res = await send(vm, { op: 'sh', command: net.cut });
          if (res.rc !== 0) throw new Error(`cannot cut ${vm} off: ${res.out}`);
          host[vm].cut = true;
          count('partition');
          active.push({ kind: 'partition', end: 'heal', vm, until: now() + between(10, 40) * 1000 });
          log(`partition ${vm} from ${backend === 'nfs' ? 'the NFS server' : 'the array'} (holds ${[...host[vm].mounted.keys()].join(',') || 'nothing'})`);
        });
      }
      add(0.4, `clock ${vm}`, async () => {
        const delta = pick([-1, 1]) * between(5, 90);
        const res = await send(vm, { op: 'sh', command: `date -s @$(( $(date +%s) + ${delta} )) >/dev/null` });
        count('clock-jump');
        log(`clock jump on ${vm}: ${delta > 0 ? '+' : ''}${delta} s (rc ${res.rc})`);
      });
      if (net.pathDown && !host[vm].pathDown) {
        add(0.4, `path ${vm}`, async () => {
          const res = await send(vm, { op: 'sh', command: net.pathDown });
          if (res.rc !== 0) throw new Error(`cannot take a path down on ${vm}: ${res.out}`);
          host[vm].pathDown = true;
          count('path-loss');
          active.push({ kind: 'path-loss', end: 'pathUp', vm, until: now() + between(5, 25) * 1000 });
          log(`path loss on ${vm} (${net.pathLabel})`);
        });
      }
    }
    if (env.ARRAY_RESTART_FILE && faulted.length === 0) {
      add(0.3, 'array restart', async () => {
        const n = ++arrayRestarts;
        writeFileSync(env.ARRAY_RESTART_FILE, String(n));
        const deadline = now() + 60_000;
        while (readFileSync(env.ARRAY_RESTART_FILE, 'utf8').trim() !== `${n} done`) {
          if (now() > deadline) throw new Error('the array did not restart within 60 s');
          await sleep(100);
        }
        count('array-restart');
        log(`array restart (tgtd killed and started again with the same targets)`);
      });
    }
    add(faulted.length ? 3 : 0.6, 'wait', async () => {
      const ms = between(2, 5) * 1000;
      await sleep(ms);
      count('wait');
      log(`wait ${ms} ms`);
    });
    return list;
  }

  const starts = await Promise.all(VMS.map((vm) => send(vm, { op: 'start' })));
  VMS.forEach((vm, i) => log(`${vm}: daemon up in ${starts[i].ms} ms`));
  for (const volume of volumes) {
    const r = await send('vm1', { op: 'create', volume, size: env.VOLUME_SIZE ?? '32M' });
    if (r.err) throw new Error(`Create ${volume}: ${r.err}`);
  }
  log(`seed ${seed}, ${steps} steps, backend ${backend}, volumes ${volumes.join(',')}`);
  const stepsStarted = now();
  for (let step = 1; step <= steps; step++) {
    // A fault ends at the first step after its (seeded) duration: the steps between are the
    // other host's chance to take over.
    // A frozen VM cannot run the end of its other faults: it is thawed first.
    const due = active.find((f) => now() >= f.until && (f.end === 'thaw' || !host[f.vm].frozen));
    stepLabel = `step ${step}`;
    if (due) {
      await endFault(due);
      continue;
    }
    const list = choices();
    const total = list.reduce((s, c) => s + c.weight, 0);
    let roll = random() * total;
    const choice = list.find((c) => (roll -= c.weight) < 0) ?? list[list.length - 1];
    await choice.act();
  }
  const stepsMs = now() - stepsStarted;

  // Settle: end every fault, stop every writer, unmount everything, stop the daemons.
  stepLabel = 'settle';
  while (active.length) await endFault(active.find((f) => f.end === 'thaw') ?? active[0]);
  // A run that drew no move and no takeover proved nothing about handing a volume over (a short
  // run's outcome-dependent draws can miss both): move one now, with the faults ended.
  if (takeovers === 0 && !faults.move) await forcedMove(volumes[0]);
  const stuck = [];
  for (const vm of VMS) stuck.push(...(await send(vm, { op: 'finish' })).stuck);
  for (let attempt = 0; attempt < 3; attempt++) {
    for (const vm of VMS) for (const volume of [...host[vm].mounted.keys()]) await unmount(vm, volume);
  }
  const leftMounted = VMS.flatMap((vm) => [...host[vm].mounted.keys()].map((v) => `${vm} ${v}`));
  const attachedAtEnd = {};
  for (const vm of VMS) {
    const res = await send(vm, { op: 'sh', command: 'echo "$(grep -c " $BALLAST_RUN/mounts" /proc/mounts) $(losetup -a | wc -l) $(iscsiadm -m session 2>/dev/null | wc -l) $(ls /sys/block | grep -c ^dm-)"' });
    attachedAtEnd[vm] = res.out;
    log(`${vm} at the end: ${res.out} (ballast mounts, loop devices, iSCSI sessions, dm maps)`);
    // Each fence this host's daemon and watchdog logged (when, volume, what, how long the freeze waited): read when a line is lost.
    const fences = await send(vm, { op: 'sh', command: FENCE_LOG, keepChars: 12_000 });
    for (const line of fences.out.split('\n').filter(Boolean)) log(`${vm} fence log: ${line}`);
    await send(vm, { op: 'stop' });
    await send(vm, { op: 'exit' });
  }

  const summary = {
    seed,
    steps,
    stepsMs,
    faults,
    takeovers,
    sessions,
    stuckWriters: stuck,
    unmountErrors,
    leftMounted,
    attachedAtEnd,
    trace,
  };
  writeJson(join(SHARE, 'summary.json'), summary);
}

// ---------------------------------------------------------------- checker (on the host)

/**
 * Reads each volume's /log from its image (a copy, journal replayed by e2fsck as the next holder's
 * mount would) and checks the sessions' lines against what each session acknowledged.
 */
function check() {
  const images = JSON.parse(env.IMAGES); // volume -> image path
  const scratch = env.SCRATCH;
  const acks = join(SHARE, 'acks');
  const summary = readJson(join(SHARE, 'summary.json'));
  const result = { volumes: {}, doubleMounts: 0, lostAcked: 0, ackedTotal: 0, fencedWriters: 0 };
  result.fencedWriters = readdirSync(acks).filter((f) => f.endsWith('.err')).length;
  for (const [volume, image] of Object.entries(images)) {
    const copy = join(scratch, `${volume}.img`);
    copyFileSync(image, copy);
    const before = spawnSync('e2fsck', ['-fn', copy], { encoding: 'utf8' });
    const repair = spawnSync('e2fsck', ['-fy', copy], { encoding: 'utf8' });
    const after = spawnSync('e2fsck', ['-fn', copy], { encoding: 'utf8' });
    const content = spawnSync('debugfs', ['-R', 'cat /log', copy], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout ?? '';
    rmSync(copy, { force: true });
    const lines = content.split('\n').filter(Boolean);
    const parsed = lines.map((l) => /^(s\d+-vm\d) (\d+)$/.exec(l));
    const malformed = parsed.filter((m) => !m).length;
    // Sessions appear in contiguous blocks: one that another followed never reappears.
    const interleavings = [];
    const finished = new Set();
    let current = '';
    for (const m of parsed) {
      if (!m || m[1] === current) continue;
      if (finished.has(m[1])) interleavings.push(`${m[1]} wrote again after ${current}`);
      if (current) finished.add(current);
      current = m[1];
    }
    const lost = [];
    let acked = 0;
    let lostLines = 0;
    for (const { session } of summary.sessions.filter((x) => x.volume === volume)) {
      const seqs = parsed.filter((m) => m && m[1] === session).map((m) => Number(m[2]));
      const n = Number(existsSync(join(acks, session)) ? readFileSync(join(acks, session), 'utf8').trim() || 0 : 0);
      acked += n;
      let prefix = 0;
      while (prefix < seqs.length && seqs[prefix] === prefix + 1) prefix += 1;
      if (prefix < n) {
        lost.push(`${session}: acknowledged ${n}, the image has ${prefix} in order (${seqs.length} lines)`);
        lostLines += n - prefix;
      }
    }
    result.volumes[volume] = {
      lines: lines.length,
      malformed,
      sessionsOnDisk: new Set(parsed.filter(Boolean).map((m) => m[1])).size,
      interleavings,
      lost,
      acked,
      fsckBeforeReplay: before.status,
      fsckRepair: repair.status,
      fsckAfter: after.status,
      fsckOutput: `${repair.stdout}`.split('\n').filter((l) => !/^Pass \d|^e2fsck|^\S+: \d+\/\d+ files/.test(l)).join('\n').trim().slice(0, 600),
    };
    result.doubleMounts += interleavings.length;
    result.lostAcked += lostLines;
    result.ackedTotal += acked;
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

const role = process.argv[2];
const roles = { agent, coordinate, check };
if (!roles[role]) {
  process.stderr.write('usage: node random-faults.mjs agent|coordinate|check\n');
  process.exit(2);
}
Promise.resolve(roles[role]()).then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`random-faults ${role}: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
