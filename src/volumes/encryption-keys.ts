import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { VolumeEncryption } from '../drivers/types.js';
import { EncryptionKeyUnusable } from '../errors.js';

/** Shorter keys are passphrases, not keys: the key slot's fast PBKDF (attach/luks.ts) relies on a key's own entropy. */
export const MIN_KEY_BYTES = 32;
/** cryptsetup reads at most 8 MiB from a key file; a key is far smaller. */
const MAX_KEY_BYTES = 8192;

const KEY_HELP = 'a key is a file of 32 to 8192 random bytes, mode 0600, e.g. `head -c 64 /dev/urandom > FILE && chmod 600 FILE`';

/**
 * Finds an encrypted volume's key on this host: its profile's `key_file`, else
 * `encryption.key_dir/KEY.key`. Keys are read here and handed to cryptsetup on stdin only:
 * never logged, never in an error, never beside the volume.
 */
export class EncryptionKeys {
  constructor(private readonly config: Config) {}

  /** Where a new volume's key will be found; refuses (naming the file to create) when it is not usable here now. */
  async forNewVolume(volume: string, profile: string): Promise<VolumeEncryption> {
    const encryption: VolumeEncryption = this.config.profiles[profile]?.key_file ? { key: 'profile' } : { key: 'key_dir', name: volume };
    await this.read(volume, profile, encryption);
    return encryption;
  }

  /** The file holding the key of a volume of `profile`. */
  pathOf(profile: string, encryption: VolumeEncryption): string {
    if (encryption.key === 'key_dir') return join(this.config.encryption.key_dir, `${encryption.name}.key`);
    const file = this.config.profiles[profile]?.key_file;
    if (!file) throw new EncryptionKeyUnusable(`the key of profile ${profile} is its key_file, but profiles.${profile}.key_file is not set in this host's configuration`);
    return file;
  }

  /** The key's bytes; throws EncryptionKeyUnusable naming the file and the fix. */
  async read(volume: string, profile: string, encryption: VolumeEncryption): Promise<Buffer> {
    const path = this.pathOf(profile, encryption);
    const refuse = (why: string) => new EncryptionKeyUnusable(`volume ${volume} is encrypted, and its key file ${path} ${why}; ${KEY_HELP}`);
    const file = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
      throw refuse(err.code === 'ENOENT' ? 'does not exist on this host' : `cannot be read (${err.code ?? err.message})`);
    });
    try {
      const stat = await file.stat();
      if (!stat.isFile()) throw refuse('is not a regular file');
      if (stat.mode & 0o077) throw refuse(`is readable by others (mode ${(stat.mode & 0o777).toString(8)}): chmod 600 it`);
      if (stat.size < MIN_KEY_BYTES || stat.size > MAX_KEY_BYTES) throw refuse(`holds ${stat.size} bytes`);
      return await file.readFile();
    } finally {
      await file.close();
    }
  }
}
