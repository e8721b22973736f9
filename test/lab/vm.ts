import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { QmpMonitor, type VmMonitor } from './vm-monitor.js';

// The VM lab: Debian's own kernel under qemu (software emulation), booted from a tiny initramfs
// whose init mounts the host's whole root read-only over 9p, puts a tmpfs overlay on top and
// switch_roots into it. Inside, every module the host kernel lacks (iscsi_tcp, dm_multipath, ...)
// can be loaded, and the host's own binaries (node, iscsiadm, multipathd, tgtd) run unchanged.
// See /work/shared/lab-notes.md, "A real Linux kernel with every module: the VM lab".
//
// One run = one temp dir (stage2.sh, script.sh, console.log) and one qemu process, tracked by its
// PID and SIGKILLed on timeout. Runs share nothing else, so several can go at once.

export interface VmRun {
  /** The script's exit code, from the marker line; undefined if the VM never got that far. */
  exitCode: number | undefined;
  timedOut: boolean;
  /** Everything on the VM's serial console (kernel errors, setup, the script's output), then qemu's stderr. */
  console: string;
  durationMs: number;
}

export interface VmOptions {
  /** bash script text, run as root inside the VM after the common setup; its exit code is the result. */
  script: string;
  /** Hard bound: qemu is SIGKILLed (by its own PID) when passed. */
  timeoutMs: number;
  /** Default 1024. */
  memoryMb?: number;
  /** A host directory mounted read-write inside the VM at the same path (9p, tag "share"). */
  shareDir?: string;
  /** qemu user-mode net: the VM's NIC gets 10.0.2.15/24; the host's loopback is 10.0.2.2. */
  network?: boolean;
  /** For logs, the VM's hostname and its initiator IQN. Default "vm". */
  name?: string;
  /** Called with qemu's PID once it runs: a test may SIGSTOP/SIGCONT the whole VM (a hung host). */
  onStart?: (pid: number) => void;
  /** The VM's BIOS (SMBIOS) UUID, /sys/class/dmi/id/product_uuid inside; default none (the file is absent). */
  uuid?: string;
  /** A virtio-scsi controller with no disks, id "scsi0" (bus "scsi0.0"): a test hot-adds disks to it. */
  scsiController?: boolean;
  /**
   * Gives qemu a monitor (QMP on a Unix socket in the run dir) and calls this with it once qemu
   * runs: the test changes the VM's hardware while the script runs (drive_add, device_add, ...).
   */
  onMonitor?: (monitor: VmMonitor) => void;
  /** Appended to the kernel command line ("scsi_mod.scan=manual"). */
  kernelArgs?: string[];
  /**
   * Point-to-point Ethernet links to other VMs: each is a virtio-net NIC with this MAC over
   * qemu's `-netdev stream` on a Unix socket, one VM listening and one connecting (lN for the
   * Nth link). qemu 7.2's client does not retry: the listening VM must be started first and its
   * socket must exist before the connecting VM starts (test/lab/fc.ts waits for it).
   * The NICs are there but down: find them inside by MAC (/sys/class/net/IF/address).
   */
  links?: Array<{ socket: string; listen: boolean; mac: string }>;
}

const CACHE_ROOT = '/var/cache/ballast-vmlab';
const EXIT_MARKER = 'BALLAST-VM-EXIT=';
/** The user-mode NIC's MAC (qemu's default for a first NIC), by which stage2 tells it from `links`. */
const USER_NET_MAC = '52:54:00:12:34:56';
/** Enough to mount the host root: virtio-pci, 9p over virtio, overlayfs. Everything else is modprobed later. */
const INITRAMFS_MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'overlay'];
/** What the common setup runs inside the VM, with the package that provides it. */
const GUEST_TOOLS: Array<[string, string]> = [
  ['/lib/systemd/systemd-udevd', 'udev'],
  ['/usr/bin/udevadm', 'udev'],
  ['/usr/sbin/iscsid', 'open-iscsi'],
  ['/usr/sbin/iscsiadm', 'open-iscsi'],
  ['/usr/sbin/multipathd', 'multipath-tools'],
  ['/usr/sbin/multipath', 'multipath-tools'],
];

// 9p's default msize (8 KiB) makes reading host files slow: `cat /usr/bin/node` (100 MB) took
// 4.8 s with it and 0.9 s with 512 KiB, the largest the virtio transport takes.
const NINEP = 'trans=virtio,version=9p2000.L,msize=512000';

/** The initramfs's /init (busybox sh, PID 1). The run dir is named on the kernel command line. */
const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /lower /rw /newroot
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
fail() { echo "ballast-vm init: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /modules/order); do insmod "/modules/$m" || fail "insmod $m"; done
run=$(sed -n 's/.*ballast\\.run=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
mount -t 9p -o ${NINEP},ro,cache=loose hostroot /lower || fail "mount hostroot"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work || fail "tmpfs"
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail "overlay"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "run"
mkdir /newroot/run/ballast-vm && cp "/lower$run/stage2.sh" "/lower$run/script.sh" /newroot/run/ballast-vm/ || fail "copy $run"
for d in proc sys dev; do mount --move /$d /newroot/$d || fail "move /$d"; done
exec switch_root /newroot /bin/bash /run/ballast-vm/stage2.sh
`;

/** PID 1 after switch_root: the common setup, the test script, the exit marker, power off. */
function stage2(name: string, iqn: string, options: VmOptions): string {
  const q = shellQuote;
  return `#!/bin/bash
set -u
echo # ends the firmware's last line
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LANG=C.UTF-8
logs=/run/ballast-vm
up() { cut -d' ' -f1 /proc/uptime; }
mkdir -p /dev/pts /dev/shm /run/lock && chmod 1777 /run/lock
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# No tmpfs on /tmp: the host's /tmp (a checkout under it, a test's files) must stay visible.
# Writes there land in the overlay's tmpfs upper layer, so they stay in the VM all the same.
${options.shareDir ? `mkdir -p ${q(options.shareDir)} && mount -t 9p -o ${NINEP},cache=none share ${q(options.shareDir)} || echo "ballast-vm: cannot mount the share"` : ''}
hostname ${q(name)}
ip link set lo up
ip addr add 127.0.0.2/8 dev lo
t0=$(up)
# Rules whose programs this lab does not need, masked in this VM's /etc (the overlay): each exec costs
# ~0.1 s of the emulated CPU, per device event. sg3-utils' three sg_inq per SCSI disk event (207
# runs in one iSCSI scenario; 60-persistent-storage's scsi_id then sets the same ID_SERIAL for
# multipath) and nfs-common's nfsrahead on every new block device (49 runs there).
for rules in 55-scsi-sg3_id 58-scsi-sg3_symlink 99-nfs; do ln -sf /dev/null /etc/udev/rules.d/$rules.rules; done
/lib/systemd/systemd-udevd --daemon 2>$logs/udevd.log
# Coldplug only what the scenarios use. All subsystems loaded no other module and took 2.5 s of
# the emulated CPU at boot instead of 0.9 (2026-12-06): ttys, memory blocks, ACPI, input.
udevadm trigger --subsystem-match=block --subsystem-match=net --subsystem-match=scsi --subsystem-match=scsi_disk --subsystem-match=virtio --subsystem-match=pci
udevadm settle
t1=$(up)
modprobe -a iscsi_tcp dm_multipath dm_mod sg || echo "ballast-vm: modprobe failed"
${options.links?.length ? 'modprobe virtio_net && udevadm settle || echo "ballast-vm: no virtio_net for the links"' : ''}
${options.network ? `modprobe virtio_net
udevadm settle
nic=
for dev in /sys/class/net/*; do [ "$(cat "$dev/address")" = ${USER_NET_MAC} ] && nic=\${dev##*/}; done
ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic" || echo "ballast-vm: no network"` : ''}
# /etc is the overlay: these writes stay in this VM. The host's own node records must not leak in.
rm -rf /etc/iscsi/nodes /etc/iscsi/send_targets /etc/multipath
echo "InitiatorName=${iqn}" > /etc/iscsi/initiatorname.iscsi
printf 'defaults {\\n\\tuser_friendly_names no\\n\\tfind_multipaths no\\n}\\n' > /etc/multipath.conf
iscsid -f >$logs/iscsid.log 2>&1 &
multipathd -d >$logs/multipathd.log 2>&1 &
echo "ballast-vm: ${name} ready at $(up)s (udev trigger+settle $(awk "BEGIN { print $t1 - $t0 }")s)"
export BALLAST_VM_NAME=${q(name)} BALLAST_VM_IQN=${q(iqn)} BALLAST_VM_LOGS=$logs
bash /run/ballast-vm/script.sh </dev/null
code=$?
# The daemon's log last, then the failure again: a console cut short keeps its end.
if [ $code -ne 0 ]; then for f in $(ls $logs/*.log | grep -v /ballast.log) $(ls $logs/ballast.log 2>/dev/null); do echo "--- $f"; tail -n 30 "$f"; done; [ ! -f $logs/failed ] || cat $logs/failed; fi
echo "${EXIT_MARKER}$code"
busybox poweroff -f
`;
}

export async function runInVm(options: VmOptions): Promise<VmRun> {
  const kernel = findKernel();
  const initrd = await initramfs(kernel);
  const name = options.name ?? 'vm';
  const iqn = `iqn.2026-11.dev.ballast:${name.toLowerCase().replace(/[^a-z0-9.-]/g, '-')}`;
  const dir = await mkdtemp(join(tmpdir(), 'ballast-vm-'));
  const consoleFile = join(dir, 'console.log');
  const started = Date.now();
  let child: ChildProcess | undefined;
  let monitor: QmpMonitor | undefined;
  try {
    await writeFile(join(dir, 'stage2.sh'), stage2(name, iqn, options));
    await writeFile(join(dir, 'script.sh'), options.script);
    const argv = [
      // A crashed jest takes its VMs down too.
      'setpriv', '--pdeathsig', 'SIGKILL',
      'qemu-system-x86_64', '-nodefaults', '-nographic', '-no-reboot', '-monitor', 'none',
      '-cpu', 'max', '-smp', '1', '-m', String(options.memoryMb ?? 1024),
      '-kernel', kernel.image, '-initrd', initrd,
      '-append', [`console=ttyS0 panic=-1 quiet ballast.run=${dir}`, ...(options.kernelArgs ?? [])].join(' '),
      '-serial', `file:${consoleFile}`,
      '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap',
      ...(options.shareDir ? ['-virtfs', `local,path=${options.shareDir},mount_tag=share,security_model=passthrough,multidevs=remap`] : []),
      ...(options.network ? ['-netdev', 'user,id=n0,restrict=off', '-device', `virtio-net-pci,netdev=n0,mac=${USER_NET_MAC}`] : []),
    ];
    if (options.uuid) argv.push('-uuid', options.uuid);
    if (options.scsiController) argv.push('-device', 'virtio-scsi-pci,id=scsi0');
    (options.links ?? []).forEach((link, i) => {
      argv.push('-netdev', `stream,id=l${i},server=${link.listen ? 'on' : 'off'},addr.type=unix,addr.path=${link.socket}`);
      argv.push('-device', `virtio-net-pci,netdev=l${i},mac=${link.mac}`);
    });
    if (options.onMonitor) argv.push('-qmp', `unix:${join(dir, 'qmp.sock')},server=on,wait=off`);
    const qemu = (child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] }));
    let stderr = '';
    qemu.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    if (qemu.pid !== undefined) options.onStart?.(qemu.pid);
    if (options.onMonitor) options.onMonitor((monitor = new QmpMonitor(join(dir, 'qmp.sock'))));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      qemu.kill('SIGKILL');
    }, options.timeoutMs);
    const spawned = await new Promise<boolean>((resolve) => {
      qemu.once('error', (err) => { stderr += String(err); resolve(false); });
      qemu.once('close', () => resolve(true));
    });
    clearTimeout(timer);
    const durationMs = Date.now() - started;
    const serial = existsSync(consoleFile) ? (await readFile(consoleFile, 'utf8')).replace(/\r\n/g, '\n').replace(/\x1b(\[[0-9;?]*[A-Za-z]|c)/g, '') : '';
    const markers = [...serial.matchAll(new RegExp(`^${EXIT_MARKER}(\\d+)$`, 'gm'))];
    const exitCode = spawned && markers.length ? Number(markers[markers.length - 1]![1]) : undefined;
    const text = stderr.trim() ? `${serial}\n--- qemu stderr (${name})\n${stderr}` : serial;
    return { exitCode, timedOut, console: text, durationMs };
  } finally {
    monitor?.close();
    // Only if it has not exited: its PID may already belong to someone else.
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

/** Throws, naming the missing file and its Debian package, unless every part of the lab is here. */
export function requireVmLab(): void {
  if (process.getuid?.() !== 0) throw new Error('the VM lab needs root (qemu exports / over 9p with passthrough)');
  const missing: string[] = [];
  try {
    findKernel();
  } catch (err) {
    missing.push((err as Error).message);
  }
  for (const [tool, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['setpriv', 'util-linux']] as const) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      missing.push(`${tool} (apt-get install ${pkg})`);
    }
  }
  if (!existsSync('/bin/busybox')) missing.push('/bin/busybox (apt-get install busybox-static)');
  else if (!isStaticElf('/bin/busybox')) missing.push('a static /bin/busybox: this one is dynamically linked (apt-get install busybox-static)');
  for (const [file, pkg] of GUEST_TOOLS) if (!existsSync(file)) missing.push(`${file} (apt-get install ${pkg})`);
  if (missing.length) throw new Error(`the VM lab is incomplete; missing:\n  ${missing.join('\n  ')}`);
}

export interface Kernel { version: string; image: string; modules: string }

/** The newest /boot/vmlinuz-<v> that has its /lib/modules/<v>: the kernel the VMs boot. */
export function findKernel(): Kernel {
  const versions = existsSync('/boot') ? readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).map((f) => f.slice(8)) : [];
  const usable = versions.filter((v) => existsSync(`/lib/modules/${v}/modules.dep`));
  usable.sort((a, b) => b.localeCompare(a, undefined, { numeric: true }));
  const version = usable[0];
  if (!version) {
    throw new Error(versions.length
      ? `/lib/modules/${versions[0]}/modules.dep for /boot/vmlinuz-${versions[0]} (apt-get install linux-image-amd64)`
      : '/boot/vmlinuz-* (apt-get install linux-image-amd64)');
  }
  return { version, image: `/boot/vmlinuz-${version}`, modules: `/lib/modules/${version}` };
}

const building = new Map<string, Promise<string>>();

/**
 * The initramfs for this kernel, built once and cached under /var/cache/ballast-vmlab/<kver>/.
 * Its name carries a hash of /init, so a changed init is a new file. Built under a temp name and
 * renamed, so concurrent builders (jest workers) each produce a whole file and the last one wins.
 */
function initramfs(kernel: Kernel): Promise<string> {
  const key = createHash('sha256').update(INIT).update(INITRAMFS_MODULES.join()).digest('hex').slice(0, 12);
  const target = join(CACHE_ROOT, kernel.version, `initrd-${key}.cpio.gz`);
  if (existsSync(target)) return Promise.resolve(target);
  let pending = building.get(target);
  if (!pending) {
    pending = buildInitramfs(kernel, target).finally(() => building.delete(target));
    building.set(target, pending);
  }
  return pending;
}

async function buildInitramfs(kernel: Kernel, target: string): Promise<string> {
  mkdirSync(join(CACHE_ROOT, kernel.version), { recursive: true });
  const staging = await mkdtemp(join(tmpdir(), 'ballast-initramfs-'));
  const partial = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    mkdirSync(join(staging, 'bin'));
    mkdirSync(join(staging, 'modules'));
    copyFileSync('/bin/busybox', join(staging, 'bin', 'busybox'));
    writeFileSync(join(staging, 'init'), INIT, { mode: 0o755 });
    const order: string[] = [];
    for (const path of moduleLoadOrder(kernel.modules, INITRAMFS_MODULES)) {
      const file = basename(path).replace(/\.(xz|zst|gz)$/, '');
      writeFileSync(join(staging, 'modules', file), decompressModule(join(kernel.modules, path)));
      order.push(file);
    }
    writeFileSync(join(staging, 'modules', 'order'), `${order.join('\n')}\n`);
    execFileSync('sh', ['-c', `find . | /bin/busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1 > '${partial}'`], { cwd: staging });
    renameSync(partial, target);
    return target;
  } finally {
    rmSync(partial, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

/** Module files (relative to the modules dir) to insmod, dependencies first, from modules.dep. */
function moduleLoadOrder(modulesDir: string, wanted: string[]): string[] {
  const canonical = (path: string) => basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [path, rest] = line.split(':');
    if (path && rest !== undefined) deps.set(canonical(path), { path, deps: rest.trim().split(/\s+/).filter(Boolean) });
  }
  const builtin = new Set(readFileSync(join(modulesDir, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map(canonical));
  const order: string[] = [];
  const visit = (name: string) => {
    const entry = deps.get(name);
    if (!entry) {
      if (builtin.has(name)) return;
      throw new Error(`kernel module ${name} is neither in ${modulesDir}/modules.dep nor built in`);
    }
    if (order.includes(entry.path)) return;
    for (const dep of entry.deps) visit(canonical(dep));
    order.push(entry.path);
  };
  wanted.forEach(visit);
  return order;
}

/** busybox insmod wants a plain .ko; some kernels ship .ko.xz or .ko.zst. */
function decompressModule(path: string): Buffer {
  if (path.endsWith('.xz')) return execFileSync('xz', ['-dc', path], { maxBuffer: 64 << 20 });
  if (path.endsWith('.zst')) return execFileSync('zstd', ['-dc', path], { maxBuffer: 64 << 20 });
  if (path.endsWith('.gz')) return execFileSync('gzip', ['-dc', path], { maxBuffer: 64 << 20 });
  return readFileSync(path);
}

/** True for an ELF executable with no PT_INTERP program header, i.e. one that needs no libc. */
function isStaticElf(path: string): boolean {
  const elf = readFileSync(path);
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}
