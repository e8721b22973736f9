import { parseState, wwpnToConfigfs } from '../../../src/drivers/lio/configfs.js';

// What the state script prints on a real array (the VM lab runs it: lio-array.test.ts):
// storage objects, then configfs links (readlink gives paths relative to the link) and directories.
const PRINTED = `S core/fileio_0/ballast-0a1b2c-f1 1 /pool/f1/disk.img
S core/iblock_0/ballast-0a1b2c-lv 0 /dev/vg/ballast-lv
L fc/20:00:52:54:00:00:01:01/tpgt_1/lun/lun_0/ballast ../../../../../../target/core/fileio_0/ballast-0a1b2c-f1
L fc/20:00:52:54:00:00:01:01/tpgt_1/lun/lun_300/ballast ../../../../../../target/core/iblock_0/ballast-0a1b2c-lv
L fc/20:00:52:54:00:00:01:01/tpgt_1/acls/20:00:52:54:00:00:02:01/lun_0/ballast ../../../../../../target/fc/20:00:52:54:00:00:01:01/tpgt_1/lun/lun_0
D fc/20:00:52:54:00:00:01:01/tpgt_1/acls/20:00:52:54:00:00:02:01
D fc/20:00:52:54:00:00:01:01/tpgt_1/acls/20:00:52:54:00:00:03:01
D fc/20:00:52:54:00:00:01:01/tpgt_1/lun/lun_0
L iscsi/iqn.2026-11.dev.ballast:v1/tpgt_1/lun/lun_0/ballast ../../../../../../target/core/fileio_0/ballast-0a1b2c-f1
D iscsi/iqn.2026-11.dev.ballast:v1/tpgt_1/np/127.0.0.1:3260
D iscsi/iqn.2026-11.dev.ballast:v1/tpgt_1/acls/iqn.2026-11.dev.ballast:vm1
`;

describe('LIO configfs state', () => {
  const state = parseState(PRINTED);

  it('reads storage objects with their backing path and whether they are enabled', () => {
    expect(state.storageObjects).toEqual(
      new Map([
        ['fileio_0/ballast-0a1b2c-f1', { enabled: true, path: '/pool/f1/disk.img' }],
        ['iblock_0/ballast-0a1b2c-lv', { enabled: false, path: '/dev/vg/ballast-lv' }],
      ]),
    );
  });

  it('reads FC ports by WWPN without colons: LUNs to objects, ACLs (also empty ones) to mapped LUNs', () => {
    const port = state.fc.get('2000525400000101')!;
    expect(port.luns).toEqual(new Map([[0, 'fileio_0/ballast-0a1b2c-f1'], [300, 'iblock_0/ballast-0a1b2c-lv']]));
    expect(port.acls).toEqual(new Map([['2000525400000201', new Map([[0, 0]])], ['2000525400000301', new Map()]]));
  });

  it('reads iSCSI targets by IQN with their portals and ACLs', () => {
    const target = state.iscsi.get('iqn.2026-11.dev.ballast:v1')!;
    expect(target.luns.get(0)).toBe('fileio_0/ballast-0a1b2c-f1');
    expect(target.portals).toEqual(['127.0.0.1:3260']);
    expect([...target.acls.keys()]).toEqual(['iqn.2026-11.dev.ballast:vm1']);
  });

  it('spells WWPNs the way tcm_fc names its ports', () => {
    expect(wwpnToConfigfs('2000525400000101')).toBe('20:00:52:54:00:00:01:01');
  });
});
