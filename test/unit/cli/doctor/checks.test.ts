import { diagnose, formatFinding, runDoctor } from '../../../../src/cli/doctor/index.js';
import { skewMs } from '../../../../src/cli/doctor/clock.js';
import { parseConfig } from '../../../../src/config/load.js';
import { errno, FakeProbe } from './fake-probe.js';

const ssh = { host: 'array1', private_key_file: '/etc/ballast/array_key' };
const dirs = { socket: '/run/docker/plugins/ballast.sock', state_dir: '/var/lib/ballast/state', mount_root: '/var/lib/ballast/mounts' };
const loopOnly = parseConfig({ ...dirs }, 'f');
const iscsi = parseConfig({ ...dirs, backends: { iscsi: { portals: ['10.0.0.5:3260'], array: { ssh } } }, profiles: { default: { backend: 'loop' }, gold: { backend: 'iscsi' } } }, 'f');
const powerflex = parseConfig({ ...dirs, backends: { powerflex: { url: 'https://pf.example', user: 'u', password_file: '/etc/p', protection_domain: 'pd', storage_pool: 'sp', metadata_root: '/srv/pf' } }, profiles: { default: { backend: 'powerflex' } } }, 'f');
const lioFc = parseConfig({ ...dirs, backends: { lio: { array: { ssh }, transport: 'fc', fc: { target_wwpns: ['20:00:00:25:b5:00:00:0a'] } } }, profiles: { default: { backend: 'lio' } } }, 'f');
const sharedLoop = parseConfig({ ...dirs, backends: { loop: { root: '/srv/ballast', shared: true } } }, 'f');
const everything = parseConfig(
  {
    ...dirs,
    backends: {
      loop: { root: '/srv/ballast', shared: true },
      iscsi: { portals: ['10.0.0.5:3260', '10.0.0.6:3260'], array: { ssh } },
      powerflex: { url: 'https://pf.example', user: 'u', password_file: '/etc/p', protection_domain: 'pd', storage_pool: 'sp', metadata_root: '/srv/pf' },
      lio: { array: { ssh }, transport: 'fc', fc: { target_wwpns: ['20:00:00:25:b5:00:00:0a'] } },
    },
    profiles: { default: { backend: 'loop' }, gold: { backend: 'iscsi' }, pf: { backend: 'powerflex' }, fc: { backend: 'lio' } },
  },
  'f',
);

async function problems(config: typeof loopOnly, probe: FakeProbe): Promise<string[]> {
  return (await diagnose(config, probe, 100)).filter((f) => f.level === 'problem').map(formatFinding);
}

describe('doctor checks', () => {
  it.each([
    ['loop only', loopOnly],
    ['iscsi', iscsi],
    ['powerflex', powerflex],
    ['lio over fc', lioFc],
    ['every transport', everything],
  ])('finds no problem on a healthy host (%s)', async (_, config) => {
    expect(await problems(config, new FakeProbe())).toEqual([]);
  });

  describe('tools', () => {
    it.each([
      ['iscsiadm', iscsi, 'open-iscsi'],
      ['multipathd', iscsi, 'multipath-tools'],
      ['sg_persist', iscsi, 'sg3-utils'],
      ['nvme', powerflex, 'nvme-cli'],
      ['mkfs.xfs', loopOnly, 'xfsprogs'],
      ['mkfs.ext4', loopOnly, 'e2fsprogs'],
      ['losetup', loopOnly, 'mount'],
    ])('names a missing tool and its Debian package (%s)', async (tool, config, pkg) => {
      const probe = new FakeProbe();
      probe.missingTools.add(tool);
      expect(await problems(config, probe)).toEqual([expect.stringMatching(new RegExp(`^problem: tools: ${tool.replace('.', '\\.')} is not on PATH \\(needed for .*\\): install it: apt-get install -y ${pkg}$`))]);
    });

    it('does not ask a loop-only host for the iSCSI, multipath or NVMe tools', async () => {
      const probe = new FakeProbe();
      ['iscsiadm', 'multipathd', 'sg_persist', 'nvme', 'iscsid'].forEach((t) => probe.missingTools.add(t));
      probe.stoppedDaemons.add('iscsid').add('multipathd');
      probe.modules.set('iscsi_tcp', 'absent');
      expect(await problems(loopOnly, probe)).toEqual([]);
    });

    it('asks no multipath tools of a single-portal iscsi backend with multipath off', async () => {
      const config = parseConfig({ ...dirs, backends: { iscsi: { portals: ['10.0.0.5:3260'], multipath: false, reservations: false, array: { ssh } } }, profiles: { default: { backend: 'iscsi' } } }, 'f');
      const probe = new FakeProbe();
      ['multipathd', 'multipath', 'sg_persist'].forEach((t) => probe.missingTools.add(t));
      probe.stoppedDaemons.add('multipathd');
      probe.modules.set('dm_multipath', 'absent');
      expect(await problems(config, probe)).toEqual([]);
    });
  });

  describe('daemons', () => {
    it('says how to start iscsid when it is not running', async () => {
      const probe = new FakeProbe();
      probe.stoppedDaemons.add('iscsid');
      expect(await problems(iscsi, probe)).toEqual([
        'problem: daemons: iscsid is not running (needed for iSCSI logins): start it: systemctl enable --now iscsid (without systemd: run `iscsid`)',
      ]);
    });

    it('says how to start multipathd when it is not running', async () => {
      const probe = new FakeProbe();
      probe.stoppedDaemons.add('multipathd');
      expect(await problems(iscsi, probe)).toEqual([expect.stringMatching(/^problem: daemons: multipathd is not running .*systemctl enable --now multipathd/)]);
    });

    it('accepts a socket-activated iscsid (its control socket listens)', async () => {
      const probe = new FakeProbe();
      probe.stoppedDaemons.add('iscsid');
      probe.listeningSockets.add('ISCSIADM_ABSTRACT_NAMESPACE');
      expect(await problems(iscsi, probe)).toEqual([]);
    });

    it('says to install open-iscsi when iscsid is not even installed', async () => {
      const probe = new FakeProbe();
      probe.stoppedDaemons.add('iscsid');
      probe.missingTools.add('iscsid');
      expect(await problems(iscsi, probe)).toEqual([expect.stringMatching(/^problem: daemons: iscsid is not installed .*apt-get install -y open-iscsi, then systemctl enable --now iscsid/)]);
    });

    it('wants tgtd when the iscsi array is this host (no array.ssh)', async () => {
      const local = parseConfig({ ...dirs, backends: { iscsi: { portals: ['127.0.0.1:3260'] } }, profiles: { default: { backend: 'iscsi' } } }, 'f');
      const probe = new FakeProbe();
      probe.stoppedDaemons.add('tgtd');
      probe.missingTools.add('tgtadm');
      expect(await problems(local, probe)).toEqual([
        expect.stringMatching(/^problem: tools: tgtadm is not on PATH .*apt-get install -y tgt$/),
        expect.stringMatching(/^problem: daemons: tgtd is not running .*systemctl enable --now tgt /),
      ]);
    });
  });

  describe('kernel', () => {
    it.each([
      ['iscsi_tcp', iscsi],
      ['dm_multipath', iscsi],
      ['nvme_tcp', powerflex],
      ['loop', loopOnly],
    ])('says to modprobe a module that is not loaded (%s)', async (module, config) => {
      const probe = new FakeProbe();
      probe.modules.set(module, 'available');
      expect(await problems(config, probe)).toEqual([
        expect.stringMatching(new RegExp(`^problem: kernel: module ${module} is not loaded \\(needed for .*\\): run \`modprobe ${module}\` and add ${module} to /etc/modules-load.d/ballast.conf`)),
      ]);
    });

    it('says a module neither built in nor installed needs the kernel modules package', async () => {
      const probe = new FakeProbe();
      probe.modules.set('iscsi_tcp', 'absent');
      expect(await problems(iscsi, probe)).toEqual([expect.stringMatching(/^problem: kernel: module iscsi_tcp is neither built in nor installed .*linux-image-amd64/)]);
    });

    it('accepts a built-in module', async () => {
      const probe = new FakeProbe();
      probe.modules.set('loop', 'builtin');
      const findings = await diagnose(loopOnly, probe, 100);
      expect(findings.map(formatFinding)).toContain('ok: kernel: module loop is built in');
    });

    it('says how to get /dev/loop-control when it is missing', async () => {
      const probe = new FakeProbe();
      probe.absentPaths.add('/dev/loop-control');
      expect(await problems(loopOnly, probe)).toEqual([expect.stringMatching(/^problem: kernel: \/dev\/loop-control is missing .*modprobe loop/)]);
    });

    it('wants an Online Fibre Channel port for lio over fc', async () => {
      const none = new FakeProbe();
      none.absentPaths.add('/sys/class/fc_host');
      expect(await problems(lioFc, none)).toEqual([expect.stringMatching(/^problem: kernel: no Fibre Channel port: \/sys\/class\/fc_host is empty .*modprobe lpfc/)]);
      const linkDown = new FakeProbe();
      linkDown.files.set('/sys/class/fc_host/host3/port_state', 'Linkdown\n');
      expect(await problems(lioFc, linkDown)).toEqual(['problem: kernel: no Fibre Channel port is Online (host3 Linkdown): check the HBA\'s link (cabling, switch port, zoning)']);
    });
  });

  describe('identity', () => {
    it('says how to make an initiator name when the file is missing or holds none', async () => {
      const missing = new FakeProbe();
      missing.absentPaths.add('/etc/iscsi/initiatorname.iscsi');
      expect(await problems(iscsi, missing)).toEqual([expect.stringMatching(/^problem: identity: \/etc\/iscsi\/initiatorname.iscsi is missing .*install open-iscsi.*iscsi-iname/)]);
      const pending = new FakeProbe();
      pending.files.set('/etc/iscsi/initiatorname.iscsi', 'GenerateName=yes\n');
      expect(await problems(iscsi, pending)).toEqual([expect.stringMatching(/holds GenerateName=yes and no name yet: run `echo "InitiatorName=\$\(iscsi-iname\)" > /)]);
      const bad = new FakeProbe();
      bad.files.set('/etc/iscsi/initiatorname.iscsi', 'InitiatorName=my-host\n');
      expect(await problems(iscsi, bad)).toEqual([expect.stringMatching(/"my-host" is not an iSCSI name/)]);
    });

    it('says a missing host NQN will be generated (info, not a problem), and an invalid one is a problem', async () => {
      const absent = new FakeProbe();
      absent.absentPaths.add('/etc/nvme/hostnqn');
      const findings = (await diagnose(powerflex, absent, 100)).map(formatFinding);
      expect(findings).toContain('info: identity: /etc/nvme/hostnqn is absent: ballast generates it (nvme gen-hostnqn) at the first NVMe/TCP attach');
      expect(findings.filter((f) => f.startsWith('problem'))).toEqual([]);
      const bad = new FakeProbe();
      bad.files.set('/etc/nvme/hostnqn', 'garbage\n');
      expect(await problems(powerflex, bad)).toEqual(['problem: identity: /etc/nvme/hostnqn holds "garbage", not an NQN: run `nvme gen-hostnqn > /etc/nvme/hostnqn`']);
    });
  });

  describe('dirs', () => {
    it('reports a directory that cannot be written, or created, with the fix', async () => {
      const probe = new FakeProbe();
      probe.writes.set('/var/lib/ballast/state', { outcome: 'failed', error: 'EROFS: read-only file system' });
      probe.writes.set('/run/docker/plugins', { outcome: 'missing', ancestor: '/run', ancestorWritable: false });
      expect(await problems(loopOnly, probe)).toEqual([
        'problem: dirs: /run/docker/plugins does not exist and /run is not writable, so ballast serve cannot create it: `mkdir -p /run/docker/plugins` as root, or set socket to a writable directory',
        'problem: dirs: /var/lib/ballast/state is not writable (EROFS: read-only file system): fix its permissions or remount it read-write, or set state_dir to a writable directory',
      ]);
    });

    it('accepts a missing directory under a writable parent (serve creates it)', async () => {
      const probe = new FakeProbe();
      probe.writes.set('/var/lib/ballast/mounts', { outcome: 'missing', ancestor: '/var/lib', ancestorWritable: true });
      expect(await problems(loopOnly, probe)).toEqual([]);
    });
  });

  describe('clock', () => {
    it('measures skew as the distance of the file time outside this host\'s window', () => {
      expect(skewMs(1000, 1010, 1005)).toBe(0);
      expect(skewMs(1000, 1010, 4010)).toBe(3000);
      expect(skewMs(1000, 1010, -2000)).toBe(-3000);
    });

    it('reports a shared root whose file times are more than 2 s off, and writes nowhere else', async () => {
      const probe = new FakeProbe();
      probe.writes.set('/srv/ballast', { outcome: 'written', before: 10_000, after: 10_050, mtimeMs: 13_550 });
      expect(await problems(sharedLoop, probe)).toEqual([expect.stringMatching(/^problem: clock: shared root \/srv\/ballast \(backends.loop.root\): its file times are 3.5 s ahead of this host's clock .*the lease depends on it.*chrony/)]);
      expect(probe.calls.filter((c) => c.startsWith('write')).sort()).toEqual(['write /run/docker/plugins', 'write /srv/ballast', 'write /var/lib/ballast/mounts', 'write /var/lib/ballast/state']);
    });

    it('accepts 2 s of skew and checks the arrays\' metadata roots too', async () => {
      const probe = new FakeProbe();
      probe.writes.set('/srv/pf', { outcome: 'written', before: 10_000, after: 10_050, mtimeMs: 8_000 });
      expect(await problems(powerflex, probe)).toEqual([]);
      probe.writes.set('/srv/pf', { outcome: 'written', before: 10_000, after: 10_050, mtimeMs: 7_900 });
      expect(await problems(powerflex, probe)).toEqual([expect.stringMatching(/^problem: clock: shared root \/srv\/pf \(backends.powerflex.metadata_root\): its file times are 2.1 s behind/)]);
    });

    it('reports a shared root that does not answer in time (a hung NFS server)', async () => {
      const probe = new FakeProbe();
      probe.writes.set('/srv/ballast', { outcome: 'timeout' });
      expect(await problems(sharedLoop, probe)).toEqual([expect.stringMatching(/^problem: clock: shared root \/srv\/ballast .* did not answer a file write within 0.1 s/)]);
    });

    it('passes on the daemon\'s NFS mount-option problems for a shared root', async () => {
      const probe = new FakeProbe();
      probe.files.set('/proc/self/mountinfo', '22 1 254:0 / / rw - ext4 /dev/vda rw\n40 22 0:50 / /srv rw - nfs4 nas:/export rw,vers=4.2,soft,lookupcache=pos\n');
      expect(await problems(sharedLoop, probe)).toEqual([expect.stringMatching(/^problem: mounts: \/srv\/ballast is on nfs4 .* is mounted soft: mount it hard/)]);
    });
  });

  describe('docker', () => {
    it('reports dockerd not running as information, not a problem', async () => {
      const probe = new FakeProbe();
      probe.dockerd = errno('ECONNREFUSED');
      const findings = (await diagnose(loopOnly, probe, 100)).map(formatFinding);
      expect(findings.filter((f) => f.startsWith('problem'))).toEqual([]);
      expect(findings).toContain('info: docker: dockerd is not running (nothing answers on /var/run/docker.sock, the setting docker.socket): not checked whether it sees the plugin; start dockerd before using volumes');
    });

    it('asks dockerd to list the plugin\'s volumes when both run', async () => {
      const probe = new FakeProbe();
      const findings = (await diagnose(loopOnly, probe, 100)).map(formatFinding);
      expect(findings).toContain('ok: docker: dockerd reaches the plugin as volume driver "ballast"');
      expect(probe.calls.filter((c) => c.startsWith('GET'))).toEqual(['GET /_ping', `GET /volumes?filters=${encodeURIComponent('{"driver":["ballast"]}')}`]);
    });

    it('reports dockerd failing to reach the plugin', async () => {
      const probe = new FakeProbe();
      probe.volumesReply = { status: 500, body: '{"message":"error while looking up volume driver ballast: plugin \\"ballast\\" not found"}' };
      expect(await problems(loopOnly, probe)).toEqual([expect.stringMatching(/^problem: docker: dockerd does not reach the plugin "ballast" \(HTTP 500: error while looking up volume driver ballast/)]);
    });

    it('reports a socket dockerd cannot discover, with the spec file that fixes it', async () => {
      const config = parseConfig({ ...dirs, socket: '/srv/run/ballast.sock' }, 'f');
      const probe = new FakeProbe();
      expect(await problems(config, probe)).toEqual(['problem: docker: dockerd cannot discover the plugin: /srv/run/ballast.sock is outside /run/docker/plugins and no spec file names it: run `echo unix:///srv/run/ballast.sock > /etc/docker/plugins/ballast.spec` (or set socket to /run/docker/plugins/ballast.sock)']);
      probe.dirs.set('/etc/docker/plugins', ['bv.spec']);
      probe.files.set('/etc/docker/plugins/bv.spec', 'unix:///srv/run/ballast.sock\n');
      expect(await problems(config, probe)).toEqual([]);
      expect(probe.calls).toContain(`GET /volumes?filters=${encodeURIComponent('{"driver":["bv"]}')}`);
    });
  });

  describe('runDoctor', () => {
    it('prints one line per finding and a summary; exit 1 when a problem was found, 0 otherwise', async () => {
      const lines: string[] = [];
      expect(await runDoctor(loopOnly, (l) => lines.push(l), new FakeProbe())).toBe(0);
      expect(lines[0]).toBe('ballast doctor: profiles default (loop); transports loop');
      expect(lines.at(-1)).toBe('no problems found');
      const sick = new FakeProbe();
      sick.stoppedDaemons.add('iscsid');
      sick.missingTools.add('iscsiadm');
      lines.length = 0;
      expect(await runDoctor(iscsi, (l) => lines.push(l), sick)).toBe(1);
      expect(lines.filter((l) => l.startsWith('problem: '))).toHaveLength(2);
      expect(lines.at(-1)).toBe('2 problems found');
    });
  });
});
