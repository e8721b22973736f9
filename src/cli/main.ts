#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { formatSize } from '../config/size.js';
import { errorMessage } from '../errors.js';
import { createLogger } from '../log.js';
import type { VolumeView } from '../volumes/volume-view.js';
import type { MountedVolume } from '../volumes/mount-state.js';

// Each command loads only what it uses: on a slow CPU (the VM lab, small hosts) importing the
// daemon's dependencies takes seconds, and operator commands need none of them.
async function callDaemon<T>(...args: Parameters<typeof import('./client.js').callDaemon>): Promise<T> {
  return (await import('./client.js')).callDaemon<T>(...args);
}

/** What breaking a lease risks, said every time an operator does it. */
const RELEASE_RISK =
  'The risk: if the former holder is not down but only cut off or hung, it may write to the volume again when it comes back, ' +
  'while another host uses it, and both hosts\' data is damaged. Release only a host that is powered off, or whose containers ' +
  'using the volume have stopped.';

const USAGE = `usage: ballast [--config FILE] COMMAND

commands:
  serve                        run the daemon (Docker volume plugin on its Unix socket)
  config check                 validate the configuration and print it with defaults filled in
  config packages [--all]      the Debian packages this host needs for the configured transports (--all: every transport)
  doctor                       check this host for what the configured backends need; exit 1 on a problem
  volume ls                    list volumes, their lease holder and where they are mounted
  volume inspect NAME          print one volume as JSON
  volume grow NAME SIZE        raise a volume's size; its filesystem grows at the next mount
  volume release NAME --force  break the lease of a host known to be dead (refused while it renews)
  volume rm NAME [--with-snapshots]
                               remove a volume (one with snapshots only with --with-snapshots)
  snapshot create VOLUME NAME  a crash-consistent copy of a volume (frozen while it is taken, if mounted here)
  snapshot ls [VOLUME]         list snapshots
  snapshot rm VOLUME NAME      remove a snapshot
  fence-watchdog               (started by serve) fences mounted volumes if the daemon stops renewing

options:
  --config FILE                configuration file (default /etc/ballast/config.yml; none: built-in defaults)
`;

interface SnapshotReply {
  volume: string;
  name: string;
  createdAt: string;
  sizeBytes: number;
  fstype: string;
  method: 'reflink' | 'copy' | 'array';
  writtenBytes: number;
}

interface VolumesReply {
  Volumes: VolumeView[];
  Mounted: Record<string, MountedVolume>;
  Hosts: Record<string, unknown>[];
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' }, force: { type: 'boolean' }, all: { type: 'boolean' }, 'with-snapshots': { type: 'boolean' } },
    allowPositionals: true,
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const config = await loadConfig(values.config);
  const [command, sub, ...rest] = positionals;
  switch (`${command} ${sub ?? ''}`.trim()) {
    case 'serve':
      const { serve } = await import('./serve.js');
      await serve(config, createLogger(config.log.level, config.log.file), values.config);
      return -1; // keeps running
    case 'fence-watchdog':
      const { runWatchdog } = await import('./watchdog.js');
      await runWatchdog(config, createLogger(config.log.level, config.log.file).child({ process: 'fence-watchdog' }));
      return 0;
    case 'config check': {
      const { maskSecrets } = await import('./config-check.js');
      process.stdout.write(`${JSON.stringify(maskSecrets(config), null, 2)}\n`);
      for (const line of config.lease.derived) process.stderr.write(`ballast: derived lease.${line}\n`);
      return 0;
    }
    case 'config packages': {
      const { packagesFor, transportsInUse, ALL_TRANSPORTS } = await import('../config/host-packages.js');
      const transports = values.all ? ALL_TRANSPORTS : transportsInUse(config);
      process.stdout.write(`${packagesFor(transports).join('\n')}\n`);
      return 0;
    }
    case 'doctor': {
      const { runDoctor } = await import('./doctor/index.js');
      return runDoctor(config, (line) => process.stdout.write(`${line}\n`));
    }
    case 'volume ls': {
      const reply = await callDaemon<VolumesReply>(config.socket, 'Ballast.Volumes');
      const rows = reply.Volumes.map((v) => {
        const lease = v.status.lease as { state: string; holder?: string };
        const mounted = reply.Mounted[v.name];
        return [v.name, String(v.status.size), String(v.status.fstype), String(v.status.profile), lease.holder ?? lease.state, mounted ? mounted.mountpoint : '-'];
      });
      printTable([['NAME', 'SIZE', 'FSTYPE', 'PROFILE', 'HOLDER', 'MOUNTED HERE'], ...rows]);
      return 0;
    }
    case 'volume inspect': {
      const name = need(rest[0], 'volume inspect NAME');
      const reply = await callDaemon<VolumesReply>(config.socket, 'Ballast.Volumes');
      const volume = reply.Volumes.find((v) => v.name === name);
      if (!volume) throw new Error(`volume ${name} does not exist`);
      // The holder's lease as this host sees it, beside every host lease on the backend: a
      // holder is takeable once its renewedSecondsAgoHere passes its leaseSeconds.
      process.stdout.write(`${JSON.stringify({ ...volume, mountedHere: reply.Mounted[name] ?? null, hostLeases: reply.Hosts }, null, 2)}\n`);
      return 0;
    }
    case 'volume grow': {
      const name = need(rest[0], 'volume grow NAME SIZE');
      const size = need(rest[1], 'volume grow NAME SIZE');
      const reply = await callDaemon<{ Volume: VolumeView }>(config.socket, 'Ballast.Grow', { Name: name, Size: size });
      process.stdout.write(`${name}: ${formatSize(Number(reply.Volume.status.sizeBytes))}; the filesystem grows at the next mount\n`);
      return 0;
    }
    case 'volume release': {
      const name = need(rest[0], 'volume release NAME --force');
      if (!values.force) throw new Error(`volume release breaks another host's lease: give --force if that host is known to be dead. ${RELEASE_RISK}`);
      const reply = await callDaemon<{ Volume: VolumeView }>(config.socket, 'Ballast.Release', { Name: name });
      process.stdout.write(`${name}: lease ${JSON.stringify(reply.Volume.status.lease)}\n`);
      process.stderr.write(`ballast: ${RELEASE_RISK}\n`);
      return 0;
    }
    case 'volume rm': {
      const name = need(rest[0], 'volume rm NAME [--with-snapshots]');
      await callDaemon(config.socket, 'Ballast.Remove', { Name: name, WithSnapshots: values['with-snapshots'] === true });
      process.stdout.write(`${name}\n`);
      return 0;
    }
    case 'snapshot create': {
      const volume = need(rest[0], 'snapshot create VOLUME NAME');
      const name = need(rest[1], 'snapshot create VOLUME NAME');
      const { callDaemonLines } = await import('./client.js');
      let shown = false;
      const reply = await callDaemonLines<{ Snapshot: SnapshotReply }>(config.socket, 'Ballast.SnapshotCreate', { Volume: volume, Name: name }, (line) => {
        const p = line.Progress as { doneBytes: number; totalBytes: number } | undefined;
        if (!p || !process.stderr.isTTY) return;
        shown = true;
        process.stderr.write(`\rcopying ${volume}: ${Math.floor((100 * p.doneBytes) / p.totalBytes)}% (${formatSize(p.doneBytes)} of ${formatSize(p.totalBytes)})`);
      });
      if (shown) process.stderr.write('\n');
      const s = reply.Snapshot;
      const how =
        s.method === 'reflink' ? 'by reflink (shared extents, no data copied)' : s.method === 'array' ? "by the array's own snapshot call" : `by copy (${formatSize(s.writtenBytes)} written)`;
      process.stdout.write(`${s.volume}@${s.name}: ${formatSize(s.sizeBytes)} ${s.fstype}, made ${how}\n`);
      return 0;
    }
    case 'snapshot ls': {
      const reply = await callDaemon<{ Snapshots: SnapshotReply[] }>(config.socket, 'Ballast.Snapshots', rest[0] ? { Volume: rest[0] } : {});
      const rows = reply.Snapshots.map((s) => [s.volume, s.name, formatSize(s.sizeBytes), s.fstype, s.method, s.createdAt]);
      printTable([['VOLUME', 'SNAPSHOT', 'SIZE', 'FSTYPE', 'METHOD', 'CREATED'], ...rows]);
      return 0;
    }
    case 'snapshot rm': {
      const volume = need(rest[0], 'snapshot rm VOLUME NAME');
      const name = need(rest[1], 'snapshot rm VOLUME NAME');
      await callDaemon(config.socket, 'Ballast.SnapshotRemove', { Volume: volume, Name: name });
      process.stdout.write(`${volume}@${name}\n`);
      return 0;
    }
    default:
      process.stderr.write(`ballast: unknown command '${positionals.join(' ')}'\n${USAGE}`);
      return 2;
  }
}

function need(value: string | undefined, usage: string): string {
  if (!value) throw new Error(`usage: ballast ${usage}`);
  return value;
}

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const row of rows) process.stdout.write(`${row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ballast: ${errorMessage(err)}\n`);
    process.exitCode = 1;
  },
);
