import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyEnvOverrides, loadConfig } from '../../../src/config/load.js';
import { ConfigError } from '../../../src/errors.js';

describe('environment overrides over config.yml', () => {
  let dir: string;
  let file: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ballast-env-'));
    file = join(dir, 'config.yml');
    await writeFile(file, 'log: {level: warn, file: /var/log/ballast.log}\ndefaults: {size: 2G}\n');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('a variable wins over the file and leaves the rest of its section alone', async () => {
    const config = await loadConfig(file, { BALLAST_LOG_LEVEL: 'debug', BALLAST_DEFAULT_FSTYPE: 'xfs' });
    expect(config.log).toEqual({ level: 'debug', file: '/var/log/ballast.log' });
    expect(config.defaults).toEqual({ size: 2 * 1024 ** 3, fstype: 'xfs', profile: 'default' });
  });

  it('an empty variable counts as unset (the plugin declares each with an empty default)', async () => {
    const config = await loadConfig(file, { BALLAST_LOG_LEVEL: '', BALLAST_HOST_ID: '' });
    expect(config.log.level).toBe('warn');
    expect(config.host.id).toBe('auto');
  });

  it('sections missing from the file are made; values are validated like the file', async () => {
    const config = await loadConfig(file, { BALLAST_METRICS_LISTEN: '127.0.0.1:9464', BALLAST_DEFAULT_SIZE: '512M', BALLAST_HOST_ID: 'node-7' });
    expect(config.metrics?.listen).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(config.defaults.size).toBe(512 * 1024 ** 2);
    expect(config.host.id).toBe('node-7');
  });

  it('applies over the embedded default when there is no file at the default path', async () => {
    const document = applyEnvOverrides({}, { BALLAST_LOG_LEVEL: 'error' }).document;
    expect(document).toEqual({ log: { level: 'error' } });
  });

  it('a bad value names the variable, not the file', async () => {
    const attempt = loadConfig(file, { BALLAST_LOG_LEVEL: 'loud' });
    await expect(attempt).rejects.toThrow(ConfigError);
    await expect(attempt).rejects.toThrow(/^BALLAST_LOG_LEVEL \(log\.level\): /);
    await expect(loadConfig(file, { BALLAST_DEFAULT_SIZE: 'huge' })).rejects.toThrow(/BALLAST_DEFAULT_SIZE \(defaults\.size\): expected a size/);
  });

  it('a section the file got wrong is still blamed on the file', async () => {
    await writeFile(file, 'log: loud\n');
    await expect(loadConfig(file, { BALLAST_LOG_LEVEL: 'debug' })).rejects.toThrow(/config\.yml: log: /);
  });

  it('does not change the parsed document it was given', () => {
    const original = { log: { level: 'warn' } };
    applyEnvOverrides(original, { BALLAST_LOG_LEVEL: 'debug' });
    expect(original).toEqual({ log: { level: 'warn' } });
  });
});
