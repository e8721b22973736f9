import { z } from 'zod';
import { absolutePath, profileCommon } from './fields.js';

// The backends ballast reaches through an array's management API (REST), not by running commands
// on an array host: OpenStack Cinder, Dell PowerFlex, Dell Storage Center, IBM Spectrum Connect.

/** OpenStack Cinder through the Block Storage API v3: volumes of a volume type, attached over iSCSI. */
export const cinderBackend = z.strictObject({
  /** The Block Storage API root; the project id is appended. */
  url: z.string().regex(/^https?:\/\/[^/\s]+(\/[^\s]*)?\/v3\/?$/, 'expected the Block Storage API v3 root, e.g. "https://cinder.example.com:8776/v3"'),
  auth: z.discriminatedUnion('type', [
    /** Cinder with auth_strategy = noauth (labs only). */
    z.strictObject({ type: z.literal('noauth'), project_id: z.string().regex(/^[0-9a-f]{32}$/, 'expected the project id: 32 lower-case hex digits') }),
    z.strictObject({
      type: z.literal('password'),
      /** Keystone v3, "https://keystone.example.com:5000/v3". */
      auth_url: z.string().regex(/^https?:\/\/[^/\s]+(\/[^\s]*)?\/v3\/?$/, 'expected the Keystone v3 URL, e.g. "https://keystone.example.com:5000/v3"'),
      user: z.string().min(1),
      /** A file holding the password (first line), readable by root only. */
      password_file: absolutePath,
      user_domain: z.string().min(1).default('Default'),
      project: z.string().min(1),
      project_domain: z.string().min(1).default('Default'),
    }),
  ]),
  /** PEM file of the CA Cinder's (and Keystone's) certificate must chain to; default: the system's CAs. */
  ca_file: absolutePath.optional(),
  /** Volume type and availability zone of profiles that name none; default: Cinder's. */
  volume_type: z.string().min(1).optional(),
  availability_zone: z.string().min(1).optional(),
  /** The address this host gives Cinder in its connector; default: its first non-loopback IPv4 address. */
  connector_ip: z.string().min(1).optional(),
  /** Hosts run multipathd: every volume goes through a dm-multipath map. */
  multipath: z.boolean().default(false),
  /** Fence with SCSI-3 persistent reservations (Cinder re-creates a target with the same CHAP secret, so a former holder could log in again). */
  reservations: z.boolean().default(true),
  /** Bound on each API call and on each wait for a volume's status. */
  timeout_seconds: z.number().positive().max(600).default(60),
});

export const cinderProfile = z.strictObject({
  backend: z.literal('cinder'),
  volume_type: z.string().min(1).optional(),
  availability_zone: z.string().min(1).optional(),
  ...profileCommon,
});

/**
 * Dell PowerFlex (ScaleIO) through its gateway's REST API: volumes in a protection domain's storage
 * pool, attached over NVMe/TCP. PowerFlex volumes carry no metadata, so the records and host
 * leases live in `metadata_root`, a directory every host shares (as the loop backend's shared root).
 */
export const powerflexBackend = z.strictObject({
  /** The gateway, "https://powerflex.example.com" (the API is below /api). */
  url: z.string().regex(/^https?:\/\/[^/\s]+\/?$/, 'expected the gateway URL without a path, e.g. "https://powerflex.example.com"'),
  /** 3: GET /api/login and Basic user:token (3.x gateways); 4: POST /rest/auth/login and a Bearer token (PowerFlex Manager 4.x). */
  api_version: z.union([z.literal(3), z.literal(4)]).default(4),
  user: z.string().min(1),
  /** A file holding the password (first line), readable by root only. */
  password_file: absolutePath,
  /** PEM file of the CA the gateway's certificate must chain to; default: the system's CAs. */
  ca_file: absolutePath.optional(),
  /** Protection domain and storage pool of profiles that name none. */
  protection_domain: z.string().min(1),
  storage_pool: z.string().min(1),
  provisioning: z.enum(['thin', 'thick']).default('thin'),
  /** Shared directory (NFS) for the volume records and host leases, the same path on every host. */
  metadata_root: absolutePath,
  /** The SDTs' NVMe/TCP portals as "address:port"; default: the protection domain's SDTs as the array lists them. */
  portals: z.array(z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}$/, 'expected "address:port"')).min(1).optional(),
  /** Bound on each API call. */
  timeout_seconds: z.number().positive().max(600).default(60),
});

export const powerflexProfile = z.strictObject({
  backend: z.literal('powerflex'),
  protection_domain: z.string().min(1).optional(),
  storage_pool: z.string().min(1).optional(),
  ...profileCommon,
});

/**
 * Dell Storage Center through Dell Storage Manager's REST API (Data Collector): volumes in a folder
 * with a storage profile, mapped to this host's server object, attached over iSCSI. Notes on an SC
 * volume are not compare-and-swap, so the records and host leases live in `metadata_root`.
 */
export const dellscBackend = z.strictObject({
  /** The Data Collector, "https://dsm.example.com:3033" (the API is below /api/rest). */
  url: z.string().regex(/^https?:\/\/[^/\s]+\/?$/, 'expected the Data Collector URL without a path, e.g. "https://dsm.example.com:3033"'),
  user: z.string().min(1),
  /** A file holding the password (first line), readable by root only. */
  password_file: absolutePath,
  ca_file: absolutePath.optional(),
  /** The Storage Center's serial number. */
  ssn: z.number().int().positive(),
  /** Storage profile of profiles that name none (SC's "Recommended (All Tiers)" when absent). */
  storage_profile: z.string().min(1).optional(),
  /** Folder for ballast's volumes and server objects, made when missing. */
  folder: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9 _.-]*$/, 'expected a folder name of letters, digits, spaces, "_", "." and "-"').default('ballast'),
  /** Shared directory (NFS) for the volume records and host leases, the same path on every host. */
  metadata_root: absolutePath,
  /** Hosts run multipathd: every volume goes through a dm-multipath map. */
  multipath: z.boolean().default(true),
  /** Fence with SCSI-3 persistent reservations (SC maps a volume to several servers if asked). */
  reservations: z.boolean().default(true),
  /** The API version asked for first; a Data Collector that names another is asked again with it. */
  api_version: z.string().regex(/^\d+\.\d+$/, 'expected a version such as "4.0"').default('4.0'),
  /** Bound on each API call and on each asynchronous task. */
  timeout_seconds: z.number().positive().max(600).default(60),
});

export const dellscProfile = z.strictObject({
  backend: z.literal('dellsc'),
  storage_profile: z.string().min(1).optional(),
  ...profileCommon,
});

/**
 * IBM Spectrum Connect (SCBE): volumes of a storage service on the IBM storage systems it fronts,
 * mapped to hosts defined on the storage system, attached over iSCSI. SCBE keeps no metadata on a
 * volume, so the records and host leases live in `metadata_root`.
 */
export const scbeBackend = z.strictObject({
  /** Spectrum Connect, "https://scbe.example.com:8440" (the API is below /api/v1). */
  url: z.string().regex(/^https?:\/\/[^/\s]+\/?$/, 'expected the Spectrum Connect URL without a path, e.g. "https://scbe.example.com:8440"'),
  user: z.string().min(1),
  password_file: absolutePath,
  ca_file: absolutePath.optional(),
  /** The interface group ballast's user belongs to in Spectrum Connect. */
  group: z.string().min(1).default('containers'),
  /** Storage service of profiles that name none ("profiles are storage services"). */
  service: z.string().min(1),
  /** This host's name as defined on the storage system (SCBE cannot define hosts); default: its hostname. */
  host_name: z.string().min(1).optional(),
  /** The storage system's iSCSI target and portals: SCBE's mappings name neither. */
  iscsi: z.strictObject({
    target: z.string().regex(/^iqn\.\d{4}-\d{2}\.[^\s]+$|^eui\.[0-9A-Fa-f]{16}$/, 'expected an iSCSI qualified name, e.g. "iqn.1986-03.com.ibm:2145.cluster1.node1"'),
    portals: z.array(z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}$/, 'expected "address:port"')).min(1),
  }),
  metadata_root: absolutePath,
  multipath: z.boolean().default(true),
  reservations: z.boolean().default(true),
  timeout_seconds: z.number().positive().max(600).default(60),
});

export const scbeProfile = z.strictObject({
  backend: z.literal('scbe'),
  service: z.string().min(1).optional(),
  ...profileCommon,
});
