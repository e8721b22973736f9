import { readFileSync } from 'node:fs';
import { parseConfig } from '../../../src/config/load.js';
import { BASE_PACKAGES, packagesFor, transportsInUse } from '../../../src/config/host-packages.js';

const ssh = { host: 'array1', private_key_file: '/etc/ballast/array_key', host_key_sha256: `SHA256:${'A'.repeat(43)}` };

describe('host packages', () => {
  it('needs only the runtime on the embedded default (loop)', () => {
    const config = parseConfig({}, 'f');
    expect([...transportsInUse(config)]).toEqual(['loop']);
    expect(packagesFor(transportsInUse(config))).toEqual([...BASE_PACKAGES]);
  });

  it('adds the iSCSI initiator, multipath and reservation tools for an iscsi profile', () => {
    const config = parseConfig({ backends: { iscsi: { portals: ['10.0.0.5:3260'], array: { ssh } } }, profiles: { default: { backend: 'loop' }, gold: { backend: 'iscsi' } } }, 'f');
    expect(packagesFor(transportsInUse(config))).toEqual([...BASE_PACKAGES, 'open-iscsi', 'multipath-tools', 'sg3-utils']);
  });

  it('adds nvme-cli for powerflex (NVMe/TCP), and nothing else', () => {
    const config = parseConfig({ backends: { powerflex: { url: 'https://pf.example', user: 'u', password_file: '/etc/p', protection_domain: 'pd1', storage_pool: 'ssd', metadata_root: '/srv/pf' } }, profiles: { default: { backend: 'powerflex' } } }, 'f');
    expect(packagesFor(transportsInUse(config))).toEqual([...BASE_PACKAGES, 'nvme-cli']);
  });

  it('matches the runtime list scripts/install-deps.sh installs', () => {
    const script = readFileSync(new URL('../../../scripts/install-deps.sh', import.meta.url), 'utf8');
    const list = /^RUNTIME_PACKAGES=\(([^)]*)\)/m.exec(script)?.[1]?.trim().split(/\s+/);
    expect(list).toEqual([...BASE_PACKAGES]);
  });
});
