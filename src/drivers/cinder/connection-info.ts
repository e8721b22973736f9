import type { CinderBackendConfig } from '../../config/schema.js';
import { BackendUnavailable } from '../../errors.js';
import type { IscsiExport } from '../../export.js';

/** What Cinder's attachment returns: the volume driver's connection data, with driver_volume_type beside it or around it. */
export interface ConnectionInfo {
  driver_volume_type?: string;
  data?: ConnectionInfo;
  target_portal?: string;
  target_iqn?: string;
  target_lun?: number;
  target_portals?: string[];
  target_iqns?: string[];
  auth_method?: string;
  auth_username?: string;
  auth_password?: string;
}

/**
 * The export the iSCSI attacher takes. Every portal Cinder lists serves the same target when
 * target_iqns names one IQN throughout; otherwise only the primary portal is used (ballast's
 * attacher logs in to one target per volume). The CHAP secret Cinder generated is passed on.
 */
export function iscsiExportOf(name: string, info: ConnectionInfo, backend: Pick<CinderBackendConfig, 'multipath' | 'reservations'>): IscsiExport {
  const data: ConnectionInfo = { ...info, ...info.data };
  const type = info.driver_volume_type ?? data.driver_volume_type;
  if (type !== 'iscsi') throw new BackendUnavailable(`Cinder attaches volume ${name} over ${type ?? 'an unnamed transport'}; ballast's cinder backend takes iSCSI volume types only`);
  if (!data.target_iqn || !data.target_portal || typeof data.target_lun !== 'number') {
    throw new BackendUnavailable(`Cinder's connection info for volume ${name} lacks target_iqn, target_portal or target_lun`);
  }
  const sameTarget = data.target_portals && data.target_iqns?.every((iqn) => iqn === data.target_iqn);
  const portals = sameTarget ? [...new Set(data.target_portals)] : [data.target_portal];
  const chap = data.auth_method?.toUpperCase() === 'CHAP' && data.auth_username && data.auth_password ? { username: data.auth_username, password: data.auth_password } : undefined;
  return { transport: 'iscsi', iqn: data.target_iqn, portals, lun: data.target_lun, ...(chap ? { chap } : {}), multipath: backend.multipath, reservations: backend.reservations };
}
