import fc from 'fast-check';
import { iscsiExportOf } from '../../../src/drivers/cinder/connection-info.js';
import { decodeHostLease, encodeHostLease } from '../../../src/drivers/cinder/host-leases.js';
import { KEY, newVolumeMetadata, ownershipMetadata, ownershipOf, recordOf, revisionOf } from '../../../src/drivers/cinder/metadata.js';
import type { OwnershipRecord } from '../../../src/ownership/types.js';

// The codecs between ballast's records and Cinder's metadata (string values of at most 255
// characters) and connection_info. The driver's use of them runs against a real Cinder in
// test/integration/cinder.test.ts.

const hostId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/);
const ownership: fc.Arbitrary<OwnershipRecord> = fc.oneof(
  fc.record({ state: fc.constant('free' as const), generation: fc.nat(), updatedAt: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()) }),
  fc.record({
    state: fc.constant('held' as const),
    generation: fc.nat(),
    updatedAt: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
    holder: fc.record({ hostId, bootId: fc.uuid(), hostname: fc.string({ minLength: 1, maxLength: 255 }), hostGeneration: fc.nat() }),
  }),
);

describe('Cinder metadata', () => {
  it('carries any ownership record through, every value within 255 characters', () => {
    fc.assert(
      fc.property(ownership, fc.uuid(), (record, attachment) => {
        const meta = ownershipMetadata(record, attachment);
        for (const value of Object.values(meta)) expect(value.length).toBeLessThanOrEqual(255);
        expect(ownershipOf('v', meta)).toEqual(record);
        expect(meta[KEY.attachment]).toBe(attachment);
      }),
    );
  });

  it('creates a free record at revision 0 and reads the volume back, sized by Cinder in GiB', () => {
    const meta = newVolumeMetadata({ name: 'web', profile: 'gold', sizeBytes: 5, fstype: 'xfs', mkfsOpts: ['-m', '0'], mountOpts: ['noatime'], readonly: true }, '2026-12-03T00:00:00.000Z');
    expect(revisionOf('web', meta)).toBe(0);
    expect(recordOf('web', meta, 2)).toEqual({
      name: 'web',
      profile: 'gold',
      sizeBytes: 2 * 2 ** 30,
      fstype: 'xfs',
      mkfsOpts: ['-m', '0'],
      mountOpts: ['noatime'],
      readonly: true,
      createdAt: '2026-12-03T00:00:00.000Z',
      ownership: { state: 'free', generation: 0, updatedAt: '2026-12-03T00:00:00.000Z' },
    });
  });

  it("keeps an encrypted volume's key location, and reads a plain volume as plain", () => {
    const base = { profile: 'gold', sizeBytes: 5, fstype: 'ext4' as const, mkfsOpts: [], mountOpts: [], readonly: false };
    const byDir = newVolumeMetadata({ ...base, name: 'a', encryption: { key: 'key_dir', name: 'src' } }, 'now');
    expect(byDir[KEY.encryption]).toBe('key_dir src');
    expect(recordOf('a', byDir, 1).encryption).toEqual({ key: 'key_dir', name: 'src' });
    expect(recordOf('b', newVolumeMetadata({ ...base, name: 'b', encryption: { key: 'profile' } }, 'now'), 1).encryption).toEqual({ key: 'profile' });
    const plain = newVolumeMetadata({ ...base, name: 'c' }, 'now');
    expect(KEY.encryption in plain).toBe(false);
    expect(recordOf('c', plain, 1)).not.toHaveProperty('encryption');
    expect(() => recordOf('d', { ...byDir, [KEY.encryption]: 'key_dir' }, 1)).toThrow(/ballast\.encryption="key_dir", which ballast did not write/);
  });

  it('refuses options that would not fit in one metadata value, naming them', () => {
    expect(() => newVolumeMetadata({ name: 'v', profile: 'p', sizeBytes: 1, fstype: 'ext4', mkfsOpts: ['x'.repeat(300)], mountOpts: [], readonly: false }, 'now')).toThrow(/mkfs options would be 30\d characters/);
  });

  it('names the key when the metadata was edited by hand', () => {
    const meta = { ...ownershipMetadata({ state: 'free', generation: 1, updatedAt: 'now' }, ''), [KEY.rev]: 'two' };
    expect(() => revisionOf('v', meta)).toThrow('ballast.rev="two"');
    expect(() => ownershipOf('v', { ...meta, [KEY.owner]: 'held 1 now', [KEY.holder]: '' })).toThrow('ballast.holder=""');
  });

  it('keeps a host lease within 255 characters and reads it back', () => {
    fc.assert(
      fc.property(hostId, fc.uuid(), fc.string({ maxLength: 255 }), fc.nat(), fc.nat(), (id, bootId, hostname, generation, renewSeq) => {
        const lease = { hostId: id, bootId, hostname, generation, renewSeq, leaseSeconds: 20, renewEverySeconds: 2, renewedAtWall: '2026-12-03T00:00:00.000Z' };
        const value = encodeHostLease(lease);
        expect(value.length).toBeLessThanOrEqual(255);
        expect(decodeHostLease(id, value)).toEqual({ ...lease, hostname: hostname.slice(0, 100) });
      }),
    );
  });
});

describe('connection_info to an iSCSI export', () => {
  const backend = { multipath: false, reservations: true };
  const recorded = {
    driver_volume_type: 'iscsi',
    target_portal: '127.0.0.1:3261',
    target_iqn: 'iqn.2010-10.org.openstack:volume-1',
    target_lun: 1,
    target_portals: ['127.0.0.1:3261'],
    target_iqns: ['iqn.2010-10.org.openstack:volume-1'],
    target_luns: [1],
    auth_method: 'CHAP',
    auth_username: 'u1',
    auth_password: 'p1',
  };

  it('takes the target, LUN and CHAP secret of the reply arrays.md recorded', () => {
    expect(iscsiExportOf('v', recorded, backend)).toEqual({ transport: 'iscsi', iqn: recorded.target_iqn, portals: ['127.0.0.1:3261'], lun: 1, chap: { username: 'u1', password: 'p1' }, multipath: false, reservations: true });
  });

  it('reads the data under "data" too, and uses every portal of one target', () => {
    const exp = iscsiExportOf('v', { driver_volume_type: 'iscsi', data: { ...recorded, driver_volume_type: undefined, target_portals: ['10.0.0.1:3260', '10.0.0.2:3260'], target_iqns: [recorded.target_iqn, recorded.target_iqn] } }, backend);
    expect(exp.portals).toEqual(['10.0.0.1:3260', '10.0.0.2:3260']);
  });

  it('uses only the primary portal when the portals are different targets', () => {
    expect(iscsiExportOf('v', { ...recorded, target_portals: ['a:1', 'b:1'], target_iqns: ['iqn.x:a', 'iqn.x:b'] }, backend).portals).toEqual(['127.0.0.1:3261']);
  });

  it('refuses another transport, naming it', () => {
    expect(() => iscsiExportOf('v', { driver_volume_type: 'rbd' }, backend)).toThrow('over rbd');
  });
});
