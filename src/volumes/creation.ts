import { VolumeAlreadyExists, type VolumeRecord } from '../drivers/index.js';
import { InvalidOption, VolumeExists } from '../errors.js';
import type { Backends } from './backends.js';
import type { EncryptionKeys } from './encryption-keys.js';
import { optionConflicts, type RequestedOptions, type VolumeSpec } from './options.js';
import type { VolumeSnapshots } from './snapshots.js';

/**
 * Create's rules past option parsing: an existing volume (here, or created first by another
 * host) is success only with the same options; a clone is made from its source; the backend
 * must be able to keep what is asked (IO limits, encryption, whose key must be on this host).
 */
export class VolumeCreation {
  constructor(
    private readonly backends: Backends,
    private readonly snapshots: VolumeSnapshots,
    private readonly keys: EncryptionKeys,
  ) {}

  /**
   * Creates `name` as requested and puts it into the index. `spec` is the resolved request,
   * undefined for a clone (its size and filesystem come from its source). The caller holds the lock.
   */
  async create(name: string, requested: RequestedOptions, spec: VolumeSpec | undefined): Promise<void> {
    const existing = await this.backends.find(name);
    if (existing) return this.checkSameOptions(existing.record, requested);
    if (!spec) {
      const clone = await this.snapshots.clone(name, { ...requested, from: requested.from! });
      return void this.backends.index.put(clone.driver, { value: clone.record, revision: 1 });
    }
    const driver = this.backends.driverFor(spec.profile);
    if (spec.ioLimits && !driver.keepsIoLimits) {
      throw new InvalidOption(`options read_iops, write_iops, read_bps, write_bps: the ${driver.kind} backend of profile ${spec.profile} cannot keep per-volume IO limits yet`);
    }
    if (requested.encrypted) {
      if (!driver.keepsEncryption) throw new InvalidOption(`option encrypted=true: the ${driver.kind} backend of profile ${spec.profile} cannot keep encrypted volumes`);
      spec.encryption = await this.keys.forNewVolume(name, spec.profile).catch((err: Error) => {
        throw new InvalidOption(`option encrypted=true: ${err.message}`);
      });
    }
    try {
      const record = await driver.create(spec);
      this.backends.index.put(driver, { value: record, revision: 1 });
    } catch (err) {
      // Another host (or process) created it first: the same rule as an existing volume.
      if (err instanceof VolumeAlreadyExists) return this.checkSameOptions(err.existing, requested);
      throw err;
    }
  }

  private checkSameOptions(existing: VolumeRecord, requested: RequestedOptions): void {
    const conflicts = optionConflicts(existing as VolumeSpec, requested);
    if (conflicts.length) {
      throw new VolumeExists(`volume ${existing.name} already exists with different options: ${conflicts.join('; ')}`);
    }
  }
}
