import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/errors.js';

const VCENTER = { url: 'https://vc.example/sdk', user: 'u', password_file: '/etc/ballast/vc' };

describe('parseConfig', () => {
  it('gives the embedded default (loop under /var/lib/ballast) for an empty document', () => {
    const config = parseConfig({}, 'f');
    expect(config.backends.loop).toEqual({ root: '/var/lib/ballast/loop', shared: false, fence: 'auto' });
    expect(config.socket).toBe('/run/docker/plugins/ballast.sock');
    expect(config.defaults).toEqual({ size: 1024 ** 3, fstype: 'ext4', profile: 'default' });
    expect(config.profiles.default).toEqual({ backend: 'loop' });
    expect(Object.isFrozen(config.defaults)).toBe(true);
  });

  it('reads sizes written as text', () => {
    const config = parseConfig({ defaults: { size: '10G' }, limits: { max_size: '1T' } }, 'f');
    expect(config.defaults.size).toBe(10 * 1024 ** 3);
    expect(config.limits.max_size).toBe(1024 ** 4);
  });

  it.each([
    [{ sockett: '/x' }, /f: \(top level\): .*sockett/],
    [{ defaults: { fstype: 'btrfs' } }, /f: defaults\.fstype: .*"ext4"/],
    [{ defaults: { size: 'huge' } }, /f: defaults\.size: expected a size/],
    [{ backends: { loop: { shared: true, fence: 'reset' } } }, /f: backends\.loop\.fence: .*"auto"\|"nfs-lock"\|"none"/],
    [{ profiles: { gold: { backend: 'iscsi' } } }, /f: profiles\.gold\.backend: profile uses the iscsi backend, but backends\.iscsi is not configured/],
    [{ profiles: { gold: { backend: 'nfs' } } }, /f: profiles\.gold\.backend: /],
    [{ backends: { iscsi: { portals: ['10.0.0.5'] } } }, /f: backends\.iscsi\.portals\.0: expected "address:port"/],
    [{ backends: { iscsi: { portals: [] } } }, /f: backends\.iscsi\.portals: /],
    [{ backends: { iscsi: { portals: ['a:3260'], chap: { username: 'u', password: 'short' } } } }, /f: backends\.iscsi\.chap\.password: /],
    [{ backends: { iscsi: { portals: ['a:3260'], target_prefix: 'Not An IQN' } } }, /f: backends\.iscsi\.target_prefix: expected an iSCSI name/],
    [{ backends: { iscsi: { portals: ['a:3260'], array: { ssh: { host: 'array1' } } } } }, /f: backends\.iscsi\.array\.ssh\.private_key_file: /],
    [{ backends: { iscsi: { portals: ['a:3260'], array: { ssh: { host: 'a', private_key_file: '/k', host_key_sha256: 'md5:ab' } } } } }, /f: backends\.iscsi\.array\.ssh\.host_key_sha256: expected "SHA256:"/],
    [{ backends: { iscsi: { portals: ['a:3260'], array: { tgt_control_port: 40000 } } } }, /f: backends\.iscsi\.array\.tgt_control_port: /],
    [
      { backends: { iscsi: { portals: ['a:3260'] } }, profiles: { a: { backend: 'iscsi' }, b: { backend: 'iscsi', volume_group: 'vg0' } } },
      /f: profiles\.b\.volume_group: pool \/var\/lib\/ballast\/iscsi is used by another iscsi profile with another volume_group/,
    ],
    [{ backends: { iscsi: { portals: ['a:3260'] } }, profiles: { a: { backend: 'iscsi', volume_group: 'vg 0' } } }, /f: profiles\.a\.volume_group: expected an LVM volume group name/],
    [{ profiles: { gold: { backend: 'vmdk' } } }, /f: profiles\.gold\.backend: profile uses the vmdk backend, but backends\.vmdk is not configured/],
    [{ backends: { vmdk: { vcenter: { url: 'https://vc.example', user: 'u', password_file: '/p' }, datastore: 'ds' } } }, /f: backends\.vmdk\.vcenter\.url: expected the vSphere API URL/],
    [{ backends: { vmdk: { vcenter: { ...VCENTER, thumbprint: 'ab:cd' }, datastore: 'ds' } } }, /f: backends\.vmdk\.vcenter\.thumbprint: expected a SHA-1 or SHA-256 fingerprint/],
    [{ backends: { vmdk: { vcenter: { ...VCENTER, password: 'inline' }, datastore: 'ds' } } }, /f: backends\.vmdk\.vcenter: .*password/],
    [{ backends: { vmdk: { vcenter: VCENTER, datastore: 'ds', folder: '../up' } } }, /f: backends\.vmdk\.folder: expected a folder name/],
    [{ backends: { vmdk: { vcenter: VCENTER, datastore: 'ds', provisioning: 'sparse' } } }, /f: backends\.vmdk\.provisioning: /],
    [{ backends: { vmdk: { vcenter: VCENTER, datastore: 'ds', vm_uuid: 'vm-42' } } }, /f: backends\.vmdk\.vm_uuid: expected a UUID/],
    [{ profiles: { gold: { backend: 'cinder' } } }, /f: profiles\.gold\.backend: profile uses the cinder backend, but backends\.cinder is not configured/],
    [{ profiles: { gold: { backend: 'powerflex' } } }, /f: profiles\.gold\.backend: profile uses the powerflex backend, but backends\.powerflex is not configured/],
    [{ profiles: { gold: { backend: 'dellsc' } } }, /f: profiles\.gold\.backend: profile uses the dellsc backend, but backends\.dellsc is not configured/],
    [{ profiles: { gold: { backend: 'scbe' } } }, /f: profiles\.gold\.backend: profile uses the scbe backend, but backends\.scbe is not configured/],
    [{ backends: { dellsc: { url: 'https://dsm:3033', user: 'u', password_file: '/p', ssn: 'abc', metadata_root: '/m' } } }, /f: backends\.dellsc\.ssn/],
    [{ backends: { dellsc: { url: 'https://dsm:3033', user: 'u', password_file: '/p', ssn: 1, metadata_root: '/m', api_version: 'v4' } } }, /f: backends\.dellsc\.api_version: expected a version such as "4\.0"/],
    [{ backends: { scbe: { url: 'https://scbe:8440', user: 'u', password_file: '/p', service: 'gold', iscsi: { target: 'target1', portals: ['10.0.0.1:3260'] }, metadata_root: '/m' } } }, /f: backends\.scbe\.iscsi\.target: expected an iSCSI qualified name/],
    [{ backends: { powerflex: { url: 'https://pf.example/api', user: 'u', password_file: '/etc/p', protection_domain: 'pd1', storage_pool: 'ssd', metadata_root: '/srv/pf' } } }, /f: backends\.powerflex\.url: expected the gateway URL without a path/],
    [{ backends: { powerflex: { url: 'https://pf.example', user: 'u', password_file: '/etc/p', protection_domain: 'pd1', storage_pool: 'ssd', metadata_root: '/srv/pf', portals: ['10.0.0.1'] } } }, /f: backends\.powerflex\.portals\.0: expected "address:port"/],
    [{ backends: { powerflex: { url: 'https://pf.example', user: 'u', password_file: '/etc/p', protection_domain: 'pd1', storage_pool: 'ssd', metadata_root: '/srv/pf', api_version: 5 } } }, /f: backends\.powerflex\.api_version/],
    [{ backends: { cinder: { url: 'https://cinder.example:8776/v2', auth: { type: 'noauth', project_id: 'a'.repeat(32) } } } }, /f: backends\.cinder\.url: expected the Block Storage API v3 root/],
    [{ backends: { cinder: { url: 'https://cinder.example:8776/v3', auth: { type: 'noauth', project_id: 'ballast' } } } }, /f: backends\.cinder\.auth\.project_id: expected the project id: 32 lower-case hex digits/],
    [{ backends: { cinder: { url: 'https://cinder.example:8776/v3', auth: { type: 'password', auth_url: 'https://k:5000/v3', user: 'u', password: 'inline', project: 'p' } } } }, /f: backends\.cinder\.auth: .*password/],
    [{ profiles: { fc: { backend: 'lio' } } }, /f: profiles\.fc\.backend: profile uses the lio backend, but backends\.lio is not configured/],
    [{ backends: { lio: { transport: 'fc' } }, profiles: { a: { backend: 'lio' } } }, /f: profiles\.a\.transport: profile uses the lio backend over fc, but backends\.lio\.fc is not configured/],
    [{ backends: { lio: { fc: { target_wwpns: ['20:00:52:54:00:00:01'] } } } }, /f: backends\.lio\.fc\.target_wwpns\.0: "20:00:52:54:00:00:01" is not a WWPN: expected 16 hex digits/],
    [{ backends: { lio: { fc: { target_wwpns: ['0x20005254000001zz'] } } } }, /f: backends\.lio\.fc\.target_wwpns\.0: .* is not a WWPN/],
    [{ backends: { lio: { fc: { target_wwpns: [] } } } }, /f: backends\.lio\.fc\.target_wwpns: /],
    [{ backends: { lio: { pool: '/srv/a,b' } } }, /f: backends\.lio\.pool: LIO takes the image path/],
    [
      { backends: { lio: { iscsi: { portals: ['a:3260'] }, fc: { target_wwpns: ['2000525400000101'] } } }, profiles: { a: { backend: 'lio' }, b: { backend: 'lio', transport: 'fc' } } },
      /f: profiles\.b\.pool: lio pool \/var\/lib\/ballast\/lio is used by another profile with another transport/,
    ],
    [{ state_dir: 'relative/dir' }, /f: state_dir: expected an absolute path/],
    [{ defaults: { profile: 'gold' } }, /f: defaults\.profile: profile "gold" is not defined/],
  ])('names the file and the key for %j', (document, message) => {
    expect(() => parseConfig(document, 'f')).toThrow(ConfigError);
    expect(() => parseConfig(document, 'f')).toThrow(message);
  });

  it('reads an iscsi backend with its defaults and a profile on a pool of its own', () => {
    const config = parseConfig(
      { backends: { iscsi: { portals: ['10.0.0.5:3260', '[fd00::5]:3260'] } }, profiles: { default: { backend: 'loop' }, gold: { backend: 'iscsi', pool: '/srv/ssd' } } },
      'f',
    );
    expect(config.backends.iscsi).toEqual({
      portals: ['10.0.0.5:3260', '[fd00::5]:3260'],
      target_prefix: 'iqn.2026-11.dev.ballast',
      array: { tgt_control_port: 0 },
      pool: '/var/lib/ballast/iscsi',
      multipath: true,
      reservations: true,
    });
    expect(config.profiles.gold).toEqual({ backend: 'iscsi', pool: '/srv/ssd' });
  });

  it('reads an lio backend: WWPNs in any spelling, a transport per profile on pools of their own', () => {
    const config = parseConfig(
      {
        backends: { lio: { iscsi: { portals: ['10.0.0.5:3260'] }, fc: { target_wwpns: ['20:00:52:54:00:00:01:01', '0x2000525400000102', 'naa.2000525400000103'] } } },
        profiles: { default: { backend: 'lio' }, fc: { backend: 'lio', transport: 'fc', pool: '/srv/fc' } },
      },
      'f',
    );
    expect(config.backends.lio).toEqual({
      array: {},
      pool: '/var/lib/ballast/lio',
      transport: 'iscsi',
      iscsi: { portals: ['10.0.0.5:3260'], target_prefix: 'iqn.2026-11.dev.ballast' },
      fc: { target_wwpns: ['2000525400000101', '2000525400000102', '2000525400000103'] },
      multipath: true,
      reservations: true,
    });
    expect(config.profiles.fc).toEqual({ backend: 'lio', transport: 'fc', pool: '/srv/fc' });
  });

  it('reads a powerflex backend with its defaults, and a profile of another pool', () => {
    const config = parseConfig({ backends: { powerflex: { url: 'https://pf.example', user: 'u', password_file: '/etc/p', protection_domain: 'pd1', storage_pool: 'ssd', metadata_root: '/srv/pf' } }, profiles: { default: { backend: 'powerflex' }, bulk: { backend: 'powerflex', storage_pool: 'hdd' } } }, 'f');
    expect(config.backends.powerflex).toEqual({ url: 'https://pf.example', api_version: 4, user: 'u', password_file: '/etc/p', protection_domain: 'pd1', storage_pool: 'ssd', provisioning: 'thin', metadata_root: '/srv/pf', timeout_seconds: 60 });
    expect(config.profiles.bulk).toEqual({ backend: 'powerflex', storage_pool: 'hdd' });
  });

  it('reads a cinder backend with its defaults, and profiles of two volume types', () => {
    const auth = { type: 'password', auth_url: 'https://keystone.example:5000/v3', user: 'ballast', password_file: '/etc/ballast/cinder.password', project: 'docker' };
    const config = parseConfig({ backends: { cinder: { url: 'https://cinder.example:8776/v3', auth } }, profiles: { default: { backend: 'cinder' }, gold: { backend: 'cinder', volume_type: 'ssd' } } }, 'f');
    expect(config.backends.cinder).toEqual({ url: 'https://cinder.example:8776/v3', auth: { ...auth, user_domain: 'Default', project_domain: 'Default' }, multipath: false, reservations: true, timeout_seconds: 60 });
    expect(config.profiles.gold).toEqual({ backend: 'cinder', volume_type: 'ssd' });
  });

  it('reads a vmdk backend with its defaults and profiles on two datastores', () => {
    const config = parseConfig({ backends: { vmdk: { vcenter: VCENTER, datastore: 'ds1' } }, profiles: { default: { backend: 'vmdk' }, silver: { backend: 'vmdk', datastore: 'ds2' } } }, 'f');
    expect(config.backends.vmdk).toEqual({ vcenter: { ...VCENTER, timeout_seconds: 60 }, datastore: 'ds1', folder: 'ballast', provisioning: 'thin' });
    expect(config.profiles.silver).toEqual({ backend: 'vmdk', datastore: 'ds2' });
  });

  it('reads an array host reached over SSH, with its defaults', () => {
    const ssh = { host: 'array1', private_key_file: '/etc/ballast/array_key', host_key_sha256: `SHA256:${'A'.repeat(43)}` };
    const config = parseConfig({ backends: { iscsi: { portals: ['10.0.0.5:3260'], array: { ssh } } } }, 'f');
    expect(config.backends.iscsi?.array).toEqual({ ssh: { ...ssh, port: 22, user: 'root' }, tgt_control_port: 0 });
  });

  it('reports every problem at once', () => {
    try {
      parseConfig({ socket: 'x', mount_root: 'y' }, 'f');
      throw new Error('no error');
    } catch (err) {
      expect((err as Error).message.split('\n')).toEqual([expect.stringMatching(/^f: socket:/), expect.stringMatching(/^f: mount_root:/)]);
    }
  });
});

describe('loadConfig', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'ballast-config-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('loads and validates a YAML file with profiles on several roots', async () => {
    const file = join(dir, 'config.yml');
    await writeFile(file, 'profiles:\n  default: {backend: loop}\n  fast: {backend: loop, root: /mnt/ssd/ballast}\n');
    const config = await loadConfig(file);
    expect(config.profiles.fast).toEqual({ backend: 'loop', root: '/mnt/ssd/ballast' });
  });

  it('fails on a path given explicitly that does not exist, naming it', async () => {
    await expect(loadConfig(join(dir, 'missing.yml'))).rejects.toThrow(/missing\.yml: cannot read the configuration/);
  });

  it('reads a file of comments only (every setting commented out) as the defaults', async () => {
    const file = join(dir, 'config.yml');
    await writeFile(file, '# socket: /run/docker/plugins/ballast.sock\n\n  # log: {level: info}\n');
    expect(await loadConfig(file, {})).toEqual(parseConfig({}, 'f'));
  });

  it('fails on bad YAML, naming the file', async () => {
    const file = join(dir, 'bad.yml');
    await writeFile(file, 'socket: [unclosed\n');
    await expect(loadConfig(file)).rejects.toThrow(/bad\.yml: not valid YAML/);
  });
});
