import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arraySshKeys, requireFcLab, runFcPair } from '../test/lab/fc.js';
import { exitWith, intFromEnv, out } from './lib/bench-run.js';
import { commandsPerCall, loadAverages as load, logEntries, type CallCommands } from './lib/daemon-log.js';
import { median } from './lib/stats.js';

// In the FC lab (two VMs under qemu TCG joined by two FCoE VN2VN links = two fabrics, two
// paths): an array VM running LIO's tcm_fc target, managed over SSH by the ballast daemon of a
// host VM (backends.lio, transport fc). The host times attach + mount and unmount + detach
// through the plugin socket, and sequential direct write and read throughput through ballast's
// multipath device against the same image attached by hand in the same round (LUN scanned on
// each path, multipathd's own map). Absolute figures are those of an emulated CPU and an
// emulated network; the ratios are the point.

/** fc-bench-host.sh's timed calls: new volumes n1, n2, ...; b0 mounted as "y" is the existing one. */
function figure(request: Record<string, unknown>): string | undefined {
  const volume = String(request.volume ?? '');
  const fresh = /^n\d+$/.test(volume);
  const existing = volume === 'b0' && request.mountId === 'y';
  if (request.request === 'VolumeDriver.Mount') return fresh ? 'new' : existing ? 'existing' : undefined;
  if (request.request === 'VolumeDriver.Unmount') return fresh ? 'detach' : existing ? 'detach_existing' : undefined;
  return undefined;
}

/** Every SSH command's duration in the log (lease renewals included). */
const sshCommandMs = (log: string) => [...logEntries(log)].filter((e) => e.message === 'command' && e.target).map((e) => Number(e.durationMs));

async function main(): Promise<number> {
  requireFcLab();
  const rounds = intFromEnv('BENCH_ROUNDS', 3);
  const writeMb = intFromEnv('BENCH_WRITE_MB', 64);
  out(`ballast FC benchmark (FCoE VN2VN in the VM lab, LIO tcm_fc array over SSH, two paths), ${new Date().toISOString()}`);
  out(`  ${rounds} rounds, ${writeMb} MiB sequential direct writes and reads (dd bs=1M oflag=direct conv=fsync / iflag=direct), 256 MiB ext4 volumes`);
  out(`  load average at start: ${load()} (${execFileSync('nproc').toString().trim()} cores; other VM tests may share them)`);

  const share = await mkdtemp(join(tmpdir(), 'ballast-fc-bench-'));
  const qemus = new Map<string, number>();
  let failed = false;
  // Ctrl-C / SIGTERM: stop the VMs by their own PIDs; runFcPair then fails and everything below unwinds.
  const stopVms = (signal: string) => {
    process.stderr.write(`\nbench: ${signal}: stopping the VMs (qemu PIDs ${[...qemus.values()].join(', ') || 'none yet'})\n`);
    for (const pid of qemus.values()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    setTimeout(() => process.exit(130), 10_000).unref();
  };
  process.once('SIGINT', () => stopVms('SIGINT'));
  process.once('SIGTERM', () => stopVms('SIGTERM'));
  try {
    const hostKey = await arraySshKeys(share); // in the share: the VMs' /tmp is their own
    const started = Date.now();
    const { host, array } = await runFcPair({
      arrayScript: join(process.cwd(), 'bench', 'vm', 'fc-bench-array.sh'),
      hostScript: join(process.cwd(), 'bench', 'vm', 'fc-bench-host.sh'),
      env: { BENCH_ROUNDS: String(rounds), BENCH_WRITE_MB: String(writeMb), SSH_HOST_KEY: hostKey },
      shareDir: share,
      // Generous: under TCG on a loaded 2-core machine one SSH command has taken 10-30 s.
      timeoutMs: intFromEnv('BENCH_VM_TIMEOUT_SECONDS', 1200 + rounds * 900) * 1000,
      memoryMb: 1280,
      onStart: (vm, pid) => qemus.set(vm, pid),
    });
    const r = host.results;
    const a = array.results;
    const series = (prefix: string, suffix = '') => Array.from({ length: rounds }, (_, i) => Number(r[`${prefix}${i + 1}${suffix}`]));
    const fmt = (x: number, unit: string) => x.toFixed(unit === 'MB/s' ? 1 : 0);
    const runs = (xs: number[], unit: string) => `(${xs.map((x) => fmt(x, unit)).join(', ')})`;
    const row = (what: string, xs: number[], unit: string) => out(`  ${what.padEnd(50)} median ${fmt(median(xs), unit).padStart(6)} ${unit.padEnd(4)}  ${runs(xs, unit)}`);

    out(`  FC login of both paths ${r.login_s} s; ballast started in ${Number(r.ballast_start_s).toFixed(1)} s; VMs ran ${((Date.now() - started) / 1000).toFixed(0)} s`);
    out(`  one SSH command host -> array (OpenSSH client, new connection each): ${[r.ssh_true_1_ms, r.ssh_true_2_ms].map((ms) => (Number(ms) / 1000).toFixed(1)).join(' s, ')} s`);
    out(`  ballast's device: ${r.ballast_device_1} over ${series('ballast_paths_').join('/')} paths; by hand: ${series('byhand_paths_').join('/')} paths`);
    out('');
    out('  Through the plugin socket (VolumeDriver.Mount / Unmount; LIO configured over SSH):');
    row('attach + mount, new volume (mkfs)', series('new_attach_mount_', '_ms'), 'ms');
    row('attach + mount, existing volume', series('existing_attach_mount_', '_ms'), 'ms');
    row('unmount + detach, new volume (after mkfs)', series('detach_', '_ms'), 'ms');
    row('unmount + detach, existing volume (after the I/O)', series('detach_existing_', '_ms'), 'ms');
    row('by hand, for reference: scan + map + mount', series('byhand_attach_mount_', '_ms'), 'ms');
    out('    (by hand: "C T L" to each HBA\'s scan file, multipathd\'s own map, mount; the LUN set up on the array beforehand, untimed)');
    out('');
    out(`  Sequential direct I/O, ${writeMb} MiB, a file on the volume's ext4, dm-multipath over both FC paths (MB/s, median and each round):`);
    out(`  ${''.padEnd(8)} ${'ballast'.padEnd(28)} ${'by hand (same image)'.padEnd(28)} ballast / by hand`);
    for (const key of ['write', 'read'] as const) {
      const b = series(`ballast_${key}_mbps_`);
      const h = series(`byhand_${key}_mbps_`);
      const cell = (xs: number[]) => `${fmt(median(xs), 'MB/s').padStart(5)} ${runs(xs, 'MB/s')}`.padEnd(28);
      out(`  ${key.padEnd(8)} ${cell(b)} ${cell(h)} ${(median(b) / median(h)).toFixed(2)}x`);
    }
    out('');
    out(`  left behind on the host VM: ${r.left_disks} FC SCSI disks, ${r.left_maps} dm maps (remote ports ${r.left_rports})`);
    out(`  left behind on the array VM: ${a.array_left_luns} LUNs on the ports, ${a.array_left_mapped_luns} LUNs mapped in ACLs, ${a.array_left_objects} storage objects`);
    const log = await readFile(join(share, 'out', 'ballast.log'), 'utf8').catch(() => '');
    const calls = commandsPerCall(log, figure);
    if (calls.size) {
      out('');
      out("  Commands per call, from the daemon's debug log (count and their summed time, median over the rounds):");
      const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
      for (const [key, what] of [['new', 'attach + mount, new volume'], ['existing', 'attach + mount, existing volume'], ['detach', 'unmount + detach, new volume'], ['detach_existing', 'unmount + detach, existing volume']] as const) {
        const xs = calls.get(key) ?? [];
        if (!xs.length) continue;
        const m = (f: (c: CallCommands) => number) => median(xs.map(f));
        out(`  ${what.padEnd(36)} on the array over SSH ${String(m((c) => c.ssh)).padStart(3)} (${sec(m((c) => c.sshMs)).padStart(7)}), on the host ${String(m((c) => c.local)).padStart(3)} (${sec(m((c) => c.localMs)).padStart(7)}); the call took ${sec(m((c) => c.wallMs))} in the daemon`);
      }
      const each = sshCommandMs(log);
      if (each.length) out(`  one SSH command (ssh2, one persistent connection), all ${each.length} of the run: median ${sec(median(each))}, min ${sec(Math.min(...each))}, max ${sec(Math.max(...each))}`);
    }
    out(`  load average at end: ${load()}`);
    const left = [r.left_disks, r.left_maps, a.array_left_luns, a.array_left_mapped_luns, a.array_left_objects];
    return left.every((n) => n === '0') ? 0 : 1;
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    if (failed || process.env.BENCH_KEEP_LOGS === '1') {
      const kept = await mkdtemp(join(tmpdir(), 'ballast-fc-bench-logs-'));
      await cp(join(share, 'out'), kept, { recursive: true }).catch(() => undefined);
      process.stderr.write(`bench: the host VM's ballast log (if it got that far) is in ${kept}\n`);
    }
    await rm(share, { recursive: true, force: true });
  }
}

exitWith(main);
