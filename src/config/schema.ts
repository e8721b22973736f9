import { z } from 'zod';
import { leaseTimings } from './lease-timings.js';
import { absolutePath, profileCommon, sizeText } from './fields.js';
import { cinderBackend, cinderProfile, dellscBackend, dellscProfile, powerflexBackend, powerflexProfile, scbeBackend, scbeProfile } from './api-backends.js';

// The shape of /etc/ballast/config.yml. Strict everywhere: an unknown key is a typo, and
// a typo in storage configuration should stop the daemon, not be ignored.

const loopBackend = z.strictObject({
  /** Where volume images and their metadata live. Put it on shared storage (NFS) for several hosts. */
  root: absolutePath.default('/var/lib/ballast/loop'),
  /** True when every host sees the same root: the plugin then reports Scope "global". */
  shared: z.boolean().default(false),
  /**
   * How a host that lost a volume is kept from writing it (shared roots): auto = nfs-lock on
   * NFS 4.1+, a filesystem shutdown on a local filesystem (hosts in one kernel), none elsewhere;
   * none = no automatic takeover, an operator releases volumes of a silent host.
   */
  fence: z.enum(['auto', 'nfs-lock', 'none']).default('auto'),
});

const loopProfile = z.strictObject({
  backend: z.literal('loop'),
  /** A root of this profile's own (e.g. a directory on faster disks); default: backends.loop.root. */
  root: absolutePath.optional(),
  ...profileCommon,
});

const portal = z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected "address:port", e.g. "10.0.0.5:3260"');
const iqn = z.string().regex(/^(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[A-Za-z0-9.:-]*)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/, 'expected an iSCSI name such as "iqn.2026-11.com.example"');

/** How ballast reaches a Linux array host (tgt or LIO) to run its commands and keep its pool. */
const arrayHostSsh = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(22),
  user: z.string().min(1).default('root'),
  /** Its public key is in the array host's authorized_keys. */
  private_key_file: absolutePath,
  /** The array host's key as `ssh-keygen -lf` prints it ("SHA256:..."); any other is refused. */
  host_key_sha256: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/, 'expected "SHA256:" and the base64 fingerprint ssh-keygen -lf prints').optional(),
});
export type ArrayHostSsh = z.output<typeof arrayHostSsh>;

const chap = z.strictObject({ username: z.string().min(1).max(255), password: z.string().min(12).max(255) });

/** A Fibre Channel port name in any common spelling, kept as 16 lower-case hex digits. */
export const wwpn = z
  .string()
  .transform((value, ctx) => {
    const hex = value.trim().toLowerCase().replace(/^(0x|naa\.)/, '').replace(/[:-]/g, '');
    if (!/^[0-9a-f]{16}$/.test(hex)) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(value)} is not a WWPN: expected 16 hex digits, e.g. "20:00:00:25:b5:00:00:0a" or "0x20000025b500000a"` });
      return z.NEVER;
    }
    return hex;
  });

const iscsiBackend = z.strictObject({
  /** Where hosts reach the array, "address:port" each; two or more use dm-multipath. */
  portals: z.array(portal).min(1),
  /** Each volume is exported as its own target, "<target_prefix>:<volume>". */
  target_prefix: iqn.default('iqn.2026-11.dev.ballast'),
  /** The array: a Linux host running tgtd, where ballast runs tgtadm and keeps the pool. */
  array: z
    .strictObject({
      /** Reach the array host over SSH; without it, tgtd runs on this host (hyper-converged). */
      ssh: arrayHostSsh.optional(),
      /** tgtd's management port (`tgtd -C N`), for arrays running several tgtd. */
      tgt_control_port: z.number().int().min(0).max(32767).default(0),
    })
    .default({ tgt_control_port: 0 }),
  /** Directory on the array host for volume images and metadata; a profile may name its own. */
  pool: absolutePath.default('/var/lib/ballast/iscsi'),
  /**
   * Hosts run multipathd: every volume goes through a dm-multipath map, even over one portal
   * (multipathd would otherwise claim the disk while it is being formatted or mounted).
   */
  multipath: z.boolean().default(true),
  /**
   * Fence with SCSI-3 persistent reservations: the holder reserves each LUN (type 5) and a new
   * holder preempts the old one's key, so a hung former holder cannot write. Needs sg3-utils.
   */
  reservations: z.boolean().default(true),
  /** CHAP credentials every target requires (tgt: an account bound to each target). */
  chap: chap.optional(),
});

const iscsiProfile = z.strictObject({
  backend: z.literal('iscsi'),
  /** A pool directory of this profile's own on the array host (e.g. on SSDs). */
  pool: absolutePath.optional(),
  /** An LVM volume group on the array host: volumes are logical volumes there, not image files. */
  volume_group: z.string().regex(/^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/, 'expected an LVM volume group name').optional(),
  ...profileCommon,
});

export const LIO_TRANSPORTS = ['iscsi', 'fc'] as const;

/** A Linux host running LIO (the kernel's SCSI target): serves volumes over iSCSI and Fibre Channel. */
const lioBackend = z.strictObject({
  /** Reach the array host over SSH; without it, LIO runs on this host. */
  array: z.strictObject({ ssh: arrayHostSsh.optional() }).default({}),
  /** Directory on the array host for volume images and metadata; a profile may name its own. */
  pool: absolutePath.regex(/^[^,=]*$/, 'LIO takes the image path in a "name=value,..." list: no "," or "=" in the pool').default('/var/lib/ballast/lio'),
  /** How hosts reach volumes of profiles that name no transport. */
  transport: z.enum(LIO_TRANSPORTS).default('iscsi'),
  iscsi: z
    .strictObject({
      /** Where hosts reach the array, "address:port" each (LIO listens on them: IP addresses). */
      portals: z.array(portal).min(1),
      /** Each volume is exported as its own target, "<target_prefix>:<volume>". */
      target_prefix: iqn.default('iqn.2026-11.dev.ballast'),
      chap: chap.optional(),
    })
    .optional(),
  fc: z
    .strictObject({
      /** The array's FC target ports (their WWPNs); every one hosts can log in to is a path. */
      target_wwpns: z.array(wwpn).min(1),
    })
    .optional(),
  /** Hosts run multipathd: every volume goes through a dm-multipath map, even over one path. */
  multipath: z.boolean().default(true),
  /** Fence with SCSI-3 persistent reservations; LIO aborts a preempted holder's queued commands. */
  reservations: z.boolean().default(true),
});

const lioProfile = z.strictObject({
  backend: z.literal('lio'),
  /** iscsi or fc; default backends.lio.transport. */
  transport: z.enum(LIO_TRANSPORTS).optional(),
  /** A pool directory of this profile's own on the array host. */
  pool: absolutePath.regex(/^[^,=]*$/, 'LIO takes the image path in a "name=value,..." list: no "," or "=" in the pool').optional(),
  /** An LVM volume group on the array host: volumes are logical volumes there (LIO iblock), not files. */
  volume_group: z.string().regex(/^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/, 'expected an LVM volume group name').optional(),
  ...profileCommon,
});

const vmdkBackend = z.strictObject({
  vcenter: z.strictObject({
    /** The vSphere API endpoint, "https://vcenter.example/sdk". */
    url: z.string().regex(/^https?:\/\/[^/\s]+\/sdk$/, 'expected the vSphere API URL, e.g. "https://vcenter.example.com/sdk"'),
    user: z.string().min(1),
    /** A file holding the password (first line), readable by root only. */
    password_file: absolutePath,
    /** PEM file of the CA (or the self-signed certificate) vCenter's certificate must chain to; default: the system's CAs. */
    ca_file: absolutePath.optional(),
    /** Trust exactly the certificate with this SHA-256 (or SHA-1) fingerprint, hex with or without colons. */
    thumbprint: z.string().regex(/^([0-9A-Fa-f]{2}:?){19}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$/, 'expected a SHA-1 or SHA-256 fingerprint in hex, e.g. "AB:CD:..."').optional(),
    /** Bound on each API call and on each task ballast waits for. */
    timeout_seconds: z.number().positive().max(600).default(60),
  }),
  /** The datacenter holding the datastores and this host's VM; default: the only one. */
  datacenter: z.string().min(1).optional(),
  /** Datastore for volumes of profiles that name none. */
  datastore: z.string().min(1),
  /** Folder on each datastore for volume disks, their metadata and the host leases. */
  folder: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected a folder name of letters, digits, "_", "." and "-"').default('ballast'),
  /** thin: space on demand; thick: allocated at create (lazily zeroed); eagerZeroedThick: allocated and zeroed. */
  provisioning: z.enum(['thin', 'thick', 'eagerZeroedThick']).default('thin'),
  /** This host's VM (its BIOS UUID) when the firmware's (/sys/class/dmi/id/product_serial or product_uuid) is not the right one. */
  vm_uuid: z.string().regex(/^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/, 'expected a UUID').optional(),
});

const vmdkProfile = z.strictObject({
  backend: z.literal('vmdk'),
  /** The datastore of this profile's volumes; default backends.vmdk.datastore. */
  datastore: z.string().min(1).optional(),
  ...profileCommon,
});

export const FSTYPES = ['ext4', 'xfs'] as const;
export type Fstype = (typeof FSTYPES)[number];

const volumeName = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export const configSchema = z.strictObject({
  host: z.strictObject({ id: z.string().regex(/^(auto|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$/, 'expected "auto" or a host id of letters, digits, "_", "." and "-"').default('auto') }).default({ id: 'auto' }),
  socket: absolutePath.default('/run/docker/plugins/ballast.sock'),
  state_dir: absolutePath.default('/var/lib/ballast/state'),
  mount_root: absolutePath.default('/var/lib/ballast/mounts'),
  docker: z
    .strictObject({
      /** dockerd's API socket: after dockerd restarts, ballast asks it which containers still run. */
      socket: absolutePath.default('/var/run/docker.sock'),
      /** How long to wait for that API to answer after a restart before leaving references as they are. */
      restart_wait_seconds: z.number().positive().max(600).default(90),
    })
    .default({ socket: '/var/run/docker.sock', restart_wait_seconds: 90 }),
  lease: leaseTimings,
  /** Prometheus metrics on an opt-in listener, e.g. {listen: 127.0.0.1:9464}. */
  metrics: z
    .strictObject({
      listen: z
        .string()
        .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/, 'expected HOST:PORT, e.g. 127.0.0.1:9464')
        .transform((text) => {
          const at = text.lastIndexOf(':');
          return { host: text.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(text.slice(at + 1)) };
        })
        .refine((l) => l.port > 0 && l.port < 65536, 'the port is 1 to 65535'),
    })
    .optional(),
  log: z
    .strictObject({
      level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
      file: absolutePath.optional(),
    })
    .default({ level: 'info' }),
  timeouts: z
    .strictObject({
      /** Bound on any one external command. */
      command_seconds: z.number().positive().max(600).default(30),
      /** Bound on mkfs and fsck, which scale with the volume. */
      filesystem_seconds: z.number().positive().max(600).default(100),
      /** How long a request waits for another request on the same volume to finish. */
      volume_lock_seconds: z.number().positive().max(600).default(100),
    })
    .default({ command_seconds: 30, filesystem_seconds: 100, volume_lock_seconds: 100 }),
  defaults: z
    .strictObject({
      size: sizeText.default(1024 ** 3),
      fstype: z.enum(FSTYPES).default('ext4'),
      profile: z.string().regex(volumeName).default('default'),
    })
    .default({ size: 1024 ** 3, fstype: 'ext4', profile: 'default' }),
  limits: z
    .strictObject({ max_size: sizeText.default(16 * 1024 ** 4) })
    .default({ max_size: 16 * 1024 ** 4 }),
  /** Keys of encrypted volumes (--opt encrypted=true) whose profile names no key_file: KEY_DIR/VOLUME.key. */
  encryption: z
    .strictObject({ key_dir: absolutePath.default('/etc/ballast/keys') })
    .default({ key_dir: '/etc/ballast/keys' }),
  backends: z
    .strictObject({ loop: loopBackend.default({ root: '/var/lib/ballast/loop', shared: false, fence: 'auto' }), iscsi: iscsiBackend.optional(), lio: lioBackend.optional(), vmdk: vmdkBackend.optional(), cinder: cinderBackend.optional(), powerflex: powerflexBackend.optional(), dellsc: dellscBackend.optional(), scbe: scbeBackend.optional() })
    .default({ loop: { root: '/var/lib/ballast/loop', shared: false, fence: 'auto' } }),
  profiles: z
    .record(z.string().regex(volumeName, 'a profile name is letters, digits, "_", "." and "-"'), z.discriminatedUnion('backend', [loopProfile, iscsiProfile, lioProfile, vmdkProfile, cinderProfile, powerflexProfile, dellscProfile, scbeProfile]))
    .default({ default: { backend: 'loop' } }),
}).superRefine((config, ctx) => {
  const groupOfPool = new Map<string, string | undefined>();
  const lioPools = new Map<string, string>();
  for (const [name, profile] of Object.entries(config.profiles)) {
    if (profile.backend === 'iscsi' && config.backends.iscsi) {
      // One pool holds one kind of volume: the metadata of both would be listed together.
      const pool = profile.pool ?? config.backends.iscsi.pool;
      if (groupOfPool.has(pool) && groupOfPool.get(pool) !== profile.volume_group) {
        ctx.addIssue({ code: 'custom', path: ['profiles', name, 'volume_group'], message: `pool ${pool} is used by another iscsi profile with another volume_group; give this profile a pool of its own` });
      }
      groupOfPool.set(pool, profile.volume_group);
    }
    if (profile.backend === 'vmdk' && !config.backends.vmdk) {
      ctx.addIssue({ code: 'custom', path: ['profiles', name, 'backend'], message: 'profile uses the vmdk backend, but backends.vmdk is not configured' });
    }
    if (profile.backend === 'cinder' && !config.backends.cinder) {
      ctx.addIssue({ code: 'custom', path: ['profiles', name, 'backend'], message: 'profile uses the cinder backend, but backends.cinder is not configured' });
    }
    if (profile.backend === 'scbe' && !config.backends.scbe) {
      ctx.addIssue({ code: 'custom', path: ['profiles', name, 'backend'], message: 'profile uses the scbe backend, but backends.scbe is not configured' });
    }
    if (profile.backend === 'dellsc' && !config.backends.dellsc) {
      ctx.addIssue({ code: 'custom', path: ['profiles', name, 'backend'], message: 'profile uses the dellsc backend, but backends.dellsc is not configured' });
    }
    if (profile.backend === 'powerflex' && !config.backends.powerflex) {
      ctx.addIssue({ code: 'custom', path: ['profiles', name, 'backend'], message: 'profile uses the powerflex backend, but backends.powerflex is not configured' });
    }
    if (profile.backend === 'iscsi' && !config.backends.iscsi) {
      ctx.addIssue({ code: 'custom', path: ['profiles', name, 'backend'], message: 'profile uses the iscsi backend, but backends.iscsi is not configured' });
    }
    if (profile.backend === 'lio') checkLioProfile(config, name, profile, lioPools, ctx);
    const ioDefaults = IO_LIMIT_KEYS.filter((key) => profile[key] !== undefined);
    if (ioDefaults.length && !IO_LIMIT_BACKENDS.includes(profile.backend)) {
      ctx.addIssue({ code: 'custom', path: ['profiles', name, ioDefaults[0]!], message: `the ${profile.backend} backend cannot keep per-volume IO limits yet (${IO_LIMIT_BACKENDS.join(', ')} can)` });
    }
  }
});

const IO_LIMIT_KEYS = ['read_iops', 'write_iops', 'read_bps', 'write_bps'] as const;
/** The backends whose volume records keep IO limits: all whose records are files (not Cinder's metadata). */
const IO_LIMIT_BACKENDS: string[] = ['loop', 'iscsi', 'lio', 'vmdk', 'powerflex', 'dellsc', 'scbe'];

/** An lio profile needs the settings of its transport; one pool serves one transport and one kind of volume. */
function checkLioProfile(
  config: { backends: { lio?: z.output<typeof lioBackend> } },
  name: string,
  profile: z.output<typeof lioProfile>,
  pools: Map<string, string>,
  ctx: z.RefinementCtx,
): void {
  const lio = config.backends.lio;
  if (!lio) {
    ctx.addIssue({ code: 'custom', path: ['profiles', name, 'backend'], message: 'profile uses the lio backend, but backends.lio is not configured' });
    return;
  }
  const transport = profile.transport ?? lio.transport;
  if (!lio[transport]) {
    ctx.addIssue({ code: 'custom', path: ['profiles', name, 'transport'], message: `profile uses the lio backend over ${transport}, but backends.lio.${transport} is not configured` });
  }
  const pool = profile.pool ?? lio.pool;
  const kind = `${transport}/${profile.volume_group ?? 'files'}`;
  if (pools.has(pool) && pools.get(pool) !== kind) {
    ctx.addIssue({ code: 'custom', path: ['profiles', name, 'pool'], message: `lio pool ${pool} is used by another profile with another transport or volume_group; give this profile a pool of its own` });
  }
  pools.set(pool, kind);
}

export type ConfigFile = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type ProfileConfig = Config['profiles'][string];
export type IscsiBackendConfig = NonNullable<Config['backends']['iscsi']>;
export type LioBackendConfig = NonNullable<Config['backends']['lio']>;
export type ScbeBackendConfig = NonNullable<Config['backends']['scbe']>;
export type DellScBackendConfig = NonNullable<Config['backends']['dellsc']>;
export type PowerFlexBackendConfig = NonNullable<Config['backends']['powerflex']>;
export type VmdkBackendConfig = NonNullable<Config['backends']['vmdk']>;
export type CinderBackendConfig = NonNullable<Config['backends']['cinder']>;
