import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NvmeTcpAttacher, parsePortal, type NvmeAttacherOptions } from '../../../src/attach/nvme/nvme-attacher.js';
import { AttachFailed } from '../../../src/errors.js';
import type { NvmeTcpExport } from '../../../src/export.js';
import { silentLogger } from '../../../src/log.js';
import { FakeNvmeHost } from '../../helpers/fake-nvme-host.js';

const NQN = 'nqn.1988-11.com.dell:powerflex:00:4f6e3a2b1c0d9e8f';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555';
const NGUID = '4f6e3a2b00000001a1b2c3d4e5f60718';
const OTHER = '4f6e3a2b00000002a1b2c3d4e5f60718';
const P1 = '10.0.0.5:4420';
const P2 = '10.0.1.5:4420';
const CTX = { hostId: 'host1', generation: 3 };

describe('NvmeTcpAttacher (fake nvme-cli and sysfs; nvmet in the VM lab is the real one)', () => {
  let root: string;
  let host: FakeNvmeHost;
  const exp = (over: Partial<NvmeTcpExport> = {}): NvmeTcpExport => ({ transport: 'nvme-tcp', subsystemNqn: NQN, portals: [P1, P2], nguid: NGUID, ...over });
  const attacherWith = (over: Partial<NvmeAttacherOptions> = {}) =>
    new NvmeTcpAttacher(host, silentLogger(), { commandTimeoutMs: 1_000, root, deviceWaitMs: 300, pollMs: 10, sleep: () => host.settle(), ...over });

  const setUp = async (init: Parameters<FakeNvmeHost['init']>[0] = { hostNqn: HOST }) => {
    root = await mkdtemp(join(tmpdir(), 'ballast-nvme-'));
    host = new FakeNvmeHost(root);
    await host.init(init);
    host.subsystems.set(NQN, { portals: new Set([P1, P2]), allowedHosts: new Set([HOST, host.generatedNqn]), namespaces: [{ nguid: NGUID, enabled: true }] });
  };
  beforeEach(() => setUp());
  afterEach(() => rm(root, { recursive: true, force: true }));

  describe('identify', () => {
    it('reads /etc/nvme/hostnqn', async () => {
      expect(await attacherWith().identify()).toEqual({ nqn: HOST });
      expect(host.commands).toEqual([]);
    });

    it('generates the host NQN once when the file is absent, and keeps it there', async () => {
      await rm(root, { recursive: true, force: true });
      await setUp({});
      const attacher = attacherWith();
      expect(await attacher.identify()).toEqual({ nqn: host.generatedNqn });
      expect(await attacher.identify()).toEqual({ nqn: host.generatedNqn });
      expect(host.commands).toEqual(['nvme gen-hostnqn']);
      const file = join(root, 'etc', 'nvme', 'hostnqn');
      expect(await readFile(file, 'utf8')).toBe(`${host.generatedNqn}\n`);
      expect((await stat(file)).mode & 0o777).toBe(0o644);
    });
  });

  describe('attach', () => {
    it('connects each portal once and returns the one multipath device; a second attach connects nothing', async () => {
      const attacher = attacherWith();
      expect(await attacher.attach(exp(), CTX)).toBe('/dev/nvme0n1');
      expect(host.commands).toEqual([
        `nvme connect --transport=tcp --traddr=10.0.0.5 --trsvcid=4420 --nqn=${NQN} --hostnqn=${HOST} --config=none`,
        `nvme connect --transport=tcp --traddr=10.0.1.5 --trsvcid=4420 --nqn=${NQN} --hostnqn=${HOST} --config=none`,
      ]);
      host.calls.length = 0;
      expect(await attacher.attach(exp(), CTX)).toBe('/dev/nvme0n1');
      expect(host.commands).toEqual([]);
      expect(await attacher.isAttached(exp(), '/dev/nvme0n1')).toBe(true);
      expect(await attacher.isAttached(exp({ nguid: OTHER }), '/dev/nvme0n1')).toBe(false);
    });

    it('goes on over the portals that answer when one refuses', async () => {
      host.subsystems.get(NQN)!.portals.delete(P2);
      expect(await attacherWith().attach(exp(), CTX)).toBe('/dev/nvme0n1');
      expect(host.connectedControllers()).toEqual(['nvme0']);
    });

    it('fails naming every portal when none connects, and leaves no controller', async () => {
      host.subsystems.get(NQN)!.allowedHosts.clear(); // the array does not know this host
      const err = await attacherWith().attach(exp(), CTX).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AttachFailed);
      expect((err as Error).message).toMatch(new RegExp(`^cannot connect to NVMe/TCP subsystem ${NQN} as ${HOST} on any portal: 10\\.0\\.0\\.5:4420: .*Input/output error.*; 10\\.0\\.1\\.5:4420: `));
      expect(host.connectedControllers()).toEqual([]);
    });

    it('fails within the bound when the namespace never shows (disabled for this host), and disconnects what it connected', async () => {
      host.subsystems.get(NQN)!.namespaces[0]!.enabled = false;
      const started = Date.now();
      const err = await attacherWith().attach(exp(), CTX).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect((err as Error).message).toBe(
        `NVMe namespace with NGUID ${NGUID} did not appear within 0.3 s on subsystem ${NQN} (namespaces this host sees there: none); does the array allow this host's NQN and enable the namespace?`,
      );
      expect(host.connectedControllers()).toEqual([]);
      expect(host.commands.filter((c) => c.startsWith('nvme disconnect'))).toEqual(['nvme disconnect --device=nvme1', 'nvme disconnect --device=nvme0']);
    });

    it('does not disconnect controllers it found already connected when its own attach fails', async () => {
      host.subsystems.get(NQN)!.namespaces.push({ nguid: OTHER, enabled: true });
      await attacherWith().attach(exp({ nguid: OTHER }), CTX); // another volume of the same subsystem
      host.calls.length = 0;
      host.subsystems.get(NQN)!.namespaces[0]!.enabled = false;
      await host.settle(); // the array's event: the kernel drops the disabled namespace
      await expect(attacherWith().attach(exp(), CTX)).rejects.toThrow(`namespaces this host sees there: nvme0n2 NGUID ${OTHER})`);
      expect(host.commands.filter((c) => c.startsWith('nvme'))).toEqual([]);
      expect(host.connectedControllers()).toEqual(['nvme0', 'nvme1']);
    });

    it('waits until the device has its size (the multipath head shows size 0 for a moment)', async () => {
      const attacher = attacherWith();
      let settles = 0;
      const sizeFile = join(root, 'sys', 'block', 'nvme0n1', 'size');
      const slow = attacherWith({
        sleep: async () => {
          await host.settle();
          if (++settles < 3) await writeFile(sizeFile, '0\n'); // the head is there, its capacity not yet
        },
      });
      expect(await slow.attach(exp(), CTX)).toBe('/dev/nvme0n1');
      expect(settles).toBe(3);
      expect(await attacher.isAttached(exp(), '/dev/nvme0n1')).toBe(true);
    });

    it('refuses a namespace that shows as one device per path (native multipath off)', async () => {
      await rm(root, { recursive: true, force: true });
      await setUp({ hostNqn: HOST, multipath: false });
      expect(await attacherWith().attach(exp(), CTX)).toBe('/dev/nvme0n1');
      await host.addPathDevice('nvme1n1', NGUID); // the second controller's own device
      await expect(attacherWith().attach(exp(), CTX)).rejects.toThrow(/shows as nvme0n1, nvme1n1: native NVMe multipath is off \(nvme_core\.multipath=N\)/);
    });

    it('says to load nvme-tcp when the module is missing, and runs nothing', async () => {
      await rm(root, { recursive: true, force: true });
      await setUp({ hostNqn: HOST, tcpLoaded: false });
      await expect(attacherWith().attach(exp(), CTX)).rejects.toThrow('the nvme_tcp kernel module is not loaded: run `modprobe nvme-tcp` (and add it to /etc/modules)');
      expect(host.commands).toEqual([]);
    });
  });

  describe('detach', () => {
    it('flushes, disconnects every controller of the subsystem and waits until they are gone', async () => {
      const attacher = attacherWith();
      const device = await attacher.attach(exp(), CTX);
      host.calls.length = 0;
      await attacher.detach(exp(), device, CTX);
      expect(host.commands).toEqual(['blockdev --flushbufs /dev/nvme0n1', 'nvme disconnect --device=nvme0', 'nvme disconnect --device=nvme1']);
      expect(host.connectedControllers()).toEqual([]);
      expect(await attacher.isAttached(exp(), device)).toBe(false);
    });

    it('stays connected while another namespace of the subsystem is attached here', async () => {
      host.subsystems.get(NQN)!.namespaces.push({ nguid: OTHER, enabled: true });
      const attacher = attacherWith();
      const device = await attacher.attach(exp(), CTX);
      await attacher.attach(exp({ nguid: OTHER }), CTX);
      host.calls.length = 0;
      await attacher.detach(exp(), device, CTX);
      expect(host.commands).toEqual(['blockdev --flushbufs /dev/nvme0n1']);
      expect(host.connectedControllers()).toEqual(['nvme0', 'nvme1']);
    });

    it('is a no-op on the data path after the namespace and controllers are gone (a restart after detach)', async () => {
      await attacherWith().detach(exp(), '/dev/nvme0n1', CTX);
      expect(host.commands).toEqual([]);
    });
  });

  it('refreshSize rescans each live controller of the subsystem', async () => {
    const attacher = attacherWith();
    const device = await attacher.attach(exp(), CTX);
    host.calls.length = 0;
    expect(await attacher.refreshSize(exp(), device)).toBe(true);
    expect(host.commands).toEqual(['nvme ns-rescan /dev/nvme0', 'nvme ns-rescan /dev/nvme1']);
  });

  it('parses portals, IPv6 included, and names a bad one', () => {
    expect(parsePortal('10.0.0.5:4420')).toEqual({ traddr: '10.0.0.5', trsvcid: '4420', text: '10.0.0.5:4420' });
    expect(parsePortal('[fd00::5]:4420')).toEqual({ traddr: 'fd00::5', trsvcid: '4420', text: '[fd00::5]:4420' });
    expect(() => parsePortal('10.0.0.5')).toThrow('NVMe/TCP portal "10.0.0.5" is not address:port');
  });
});
