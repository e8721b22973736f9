import { MASK, maskSecrets } from '../../../src/cli/config-check.js';
import { parseConfig } from '../../../src/config/load.js';

describe('maskSecrets (what ballast config check prints)', () => {
  const CHAP = 'chap-secret-marker';
  const config = parseConfig(
    {
      backends: {
        iscsi: { portals: ['10.0.0.5:3260'], chap: { username: 'ballast', password: CHAP } },
        vmdk: { vcenter: { url: 'https://admin:vc-secret-marker@vc.example/sdk', user: 'u', password_file: '/etc/ballast/vc' }, datastore: 'ds1' },
      },
    },
    'f',
  );

  it('masks every inline secret, and the password of a URL with credentials', () => {
    const shown = JSON.stringify(maskSecrets(config));
    expect(shown).not.toContain(CHAP);
    expect(shown).not.toContain('vc-secret-marker');
    const masked = maskSecrets(config) as typeof config;
    expect(masked.backends.iscsi?.chap).toEqual({ username: 'ballast', password: MASK });
    expect(masked.backends.vmdk?.vcenter.url).toBe(`https://admin:${MASK}@vc.example/sdk`);
  });

  it('shows everything else as it is, password_file paths included', () => {
    const masked = maskSecrets(config) as typeof config;
    expect(masked.backends.vmdk?.vcenter.password_file).toBe('/etc/ballast/vc');
    expect(masked.backends.iscsi?.portals).toEqual(['10.0.0.5:3260']);
    expect(JSON.stringify(masked)).toBe(JSON.stringify(config).replace(CHAP, MASK).replace('vc-secret-marker', MASK));
  });

  it.each([
    ['password', 'p', MASK],
    ['application_credential_secret', 's', MASK],
    ['auth_token', 't', MASK],
    ['password_file', '/etc/ballast/pw', '/etc/ballast/pw'],
    ['url', 'https://vc.example/sdk', 'https://vc.example/sdk'],
    ['url', 'http://u:p@a:8080/x', `http://u:${MASK}@a:8080/x`],
  ])('%s = %s is shown as %s', (key, value, shown) => {
    expect(maskSecrets({ [key]: value })).toEqual({ [key]: shown });
  });
});
