import { randomBytes } from 'node:crypto';
import type express from 'express';
import type { Request, Response } from 'express';
import { handler, LoopbackSim } from './loopback-http.js';

// A PowerFlex gateway on loopback, written from the API facts in the research notes (Cinder's
// rest_client, goscaleio, os-brick): the calls ballast makes, both login styles, sessions that
// expire, the error codes 79, 81, 84, 306 and 4039, 31-character unique names and 8 GiB steps.
// Error codes the public clients do not name (an unknown pool, a full pool, a taken name) are
// this simulator's own; the driver judges those by their message. A data plane (nvmet in the VM
// lab) makes each mapping a real NVMe/TCP namespace.

/** A regex route's capture group, URL-decoded. */
const param = (req: Request, i: number) => decodeURIComponent(String((req.params as Record<string, string>)[i] ?? ''));

const KB_PER_STEP = 8 * 1024 * 1024;
const hex16 = () => randomBytes(8).toString('hex');

export interface SimVolume {
  id: string;
  name: string;
  sizeInKb: number;
  storagePoolId: string;
  volumeType: string;
  mappedHosts: string[];
  /** Set on a snapshot: the volume it was taken of. */
  ancestorVolumeId?: string;
  /** Per mapped host id: the limits setMappedSdcLimits gave that mapping (gone with the mapping). */
  limits: Map<string, { iopsLimit: number; bandwidthLimitInKbps: number }>;
}

export interface SimHost {
  id: string;
  name: string;
  nqn: string;
}

/** What makes the simulated volumes real: files and nvmet namespaces in the VM lab. */
export interface DataPlane {
  created(volume: SimVolume): Promise<void>;
  /** A snapshot of `source`: its data as it is now. */
  snapshotted?(source: SimVolume, snapshot: SimVolume): Promise<void>;
  resized(volume: SimVolume): Promise<void>;
  removed(volume: SimVolume): Promise<void>;
  mapped(volume: SimVolume, host: SimHost): Promise<void>;
  unmapped(volume: SimVolume, host: SimHost): Promise<void>;
}

export interface PowerFlexSimOptions {
  apiVersion: 3 | 4;
  username: string;
  password: string;
  /** Protection domain -> pools (name -> capacity in GiB). */
  domains?: Record<string, Record<string, number>>;
  /** The SDTs' host-facing addresses, and their NVMe/TCP port (default 4420). */
  sdtIps?: string[];
  sdtPort?: number;
  dataPlane?: DataPlane;
}

class Refusal extends Error {
  constructor(
    readonly errorCode: number,
    message: string,
    readonly httpStatus = 500,
  ) {
    super(message);
  }
}

export class PowerFlexSim extends LoopbackSim {
  readonly systemId = hex16();
  readonly volumes = new Map<string, SimVolume>();
  readonly hosts = new Map<string, SimHost>();
  /** The next call of this action (a volume action, or snapshotVolumes) is refused with errorCode 16 and the message. */
  refuseNext: { action: string; message: string } | undefined;
  private readonly tokens = new Set<string>();
  private readonly domains = new Map<string, { id: string; name: string; pools: Map<string, { id: string; name: string; capacityKb: number }> }>();

  constructor(private readonly options: PowerFlexSimOptions) {
    super();
    for (const [domain, pools] of Object.entries(options.domains ?? { pd1: { pool1: 1024 } })) {
      const entry = { id: hex16(), name: domain, pools: new Map<string, { id: string; name: string; capacityKb: number }>() };
      for (const [pool, gib] of Object.entries(pools)) entry.pools.set(pool, { id: hex16(), name: pool, capacityKb: gib * 1024 * 1024 });
      this.domains.set(domain, entry);
    }
  }

  protected errorReply(err: unknown, res: Response): void {
    const r = err instanceof Refusal ? err : new Refusal(0, String(err));
    res.status(r.httpStatus).json({ message: r.message, httpStatusCode: r.httpStatus, errorCode: r.errorCode });
  }

  /** Ends every session, as the gateway does after its idle timeout: the next call answers 401. */
  expireSessions(): void {
    this.tokens.clear();
  }

  volumeByName(name: string): SimVolume | undefined {
    return [...this.volumes.values()].find((v) => v.name === name);
  }

  protected routes(app: express.Express): void {
    const h = (fn: (req: Request) => Promise<unknown> | unknown) => handler(fn);
    if (this.options.apiVersion === 3) {
      app.get('/api/login', (req, res) => (this.credentialsOk(req, this.options.password) ? res.json(this.newToken()) : res.status(401).json({ message: 'Unauthorized', httpStatusCode: 401, errorCode: 0 })));
    } else {
      app.post('/rest/auth/login', (req, res) => {
        const { username, password } = (req.body ?? {}) as { username?: string; password?: string };
        if (username === this.options.username && password === this.options.password) return void res.json({ access_token: this.newToken(), refresh_token: hex16() });
        res.status(401).json({ message: 'Unauthorized', httpStatusCode: 401, errorCode: 0 });
      });
    }
    app.use('/api', (req, res, next) => (this.sessionOk(req) ? next() : res.status(401).json({ message: 'Unauthorized', httpStatusCode: 401, errorCode: 0 })));
    app.get('/api/types/System/instances', h(() => [{ id: this.systemId, name: 'sim' }]));
    app.post(/^\/api\/instances\/System::(\w+)\/action\/snapshotVolumes$/, h((req) => this.snapshotVolumes(param(req, 0), req.body as { snapshotDefs?: { volumeId?: string; snapshotName?: string }[] })));
    app.get(/^\/api\/types\/Domain\/instances\/getByName::(.+)$/, h((req) => this.domain(param(req, 0)).id));
    app.get(/^\/api\/types\/Pool\/instances\/getByName::(.+)$/, h((req) => this.pool(param(req, 0)).id));
    app.get(
      /^\/api\/instances\/ProtectionDomain::\w+\/relationships\/Sdt$/,
      h(() => (this.options.sdtIps ?? ['127.0.0.1']).map((ip, i) => ({ id: hex16(), name: `sdt${i + 1}`, ipList: [{ ip, role: 'StorageAndHost' }], nvmePort: this.options.sdtPort ?? 4420 }))),
    );
    app.post('/api/types/Volume/instances', h((req) => this.createVolume(req.body as Record<string, string>)));
    app.post('/api/types/Volume/instances/action/queryIdByKey', h((req) => this.volumeNamed((req.body as { name: string }).name).id));
    app.get(/^\/api\/instances\/Volume::(\w+)$/, h((req) => this.describe(this.volume(param(req, 0)))));
    app.post(/^\/api\/instances\/Volume::(\w+)\/action\/(\w+)$/, h((req) => this.volumeAction(this.volume(param(req, 0)), param(req, 1), req.body as Record<string, string>)));
    app.get('/api/types/Sdc/instances', h(() => [...this.hosts.values()].map((host) => ({ ...host, hostType: 'NVMeHost' }))));
    app.post('/api/types/Host/instances', h((req) => this.addHost(req.body as { name?: string; nqn?: string })));
  }

  private credentialsOk(req: Request, secret: string): boolean {
    const [kind, value] = (req.headers.authorization ?? '').split(' ');
    return kind === 'Basic' && Buffer.from(value ?? '', 'base64').toString() === `${this.options.username}:${secret}`;
  }

  private sessionOk(req: Request): boolean {
    const [kind, value] = (req.headers.authorization ?? '').split(' ');
    if (this.options.apiVersion === 4) return kind === 'Bearer' && this.tokens.has(value ?? '');
    const [user, token] = Buffer.from(value ?? '', 'base64').toString().split(/:(.*)/s);
    return kind === 'Basic' && user === this.options.username && this.tokens.has(token ?? '');
  }

  private newToken(): string {
    const token = randomBytes(16).toString('base64url');
    this.tokens.add(token);
    return token;
  }

  private domain(name: string) {
    const domain = this.domains.get(name);
    if (!domain) throw new Refusal(142, `Could not find the protection domain ${name}`);
    return domain;
  }

  private pool(key: string) {
    const [domainId, name] = key.split(',');
    const domain = [...this.domains.values()].find((d) => d.id === domainId);
    const pool = domain?.pools.get(name ?? '');
    if (!pool) throw new Refusal(142, `Could not find the storage pool ${name}`);
    return pool;
  }

  private volume(id: string): SimVolume {
    const volume = this.volumes.get(id);
    if (!volume) throw new Refusal(79, 'Could not find the volume');
    return volume;
  }

  private volumeNamed(name: string): SimVolume {
    const volume = this.volumeByName(name);
    if (!volume) throw new Refusal(79, 'Could not find the volume');
    return volume;
  }

  private describe(volume: SimVolume) {
    const mappedSdcInfo = volume.mappedHosts.map((id) => {
      const limits = volume.limits.get(id);
      return { sdcId: id, sdcName: this.hosts.get(id)?.name, accessMode: 'ReadWrite', limitIops: limits?.iopsLimit ?? 0, limitBwInMbps: (limits?.bandwidthLimitInKbps ?? 0) / 1024 };
    });
    const { id, name, sizeInKb, storagePoolId, volumeType, ancestorVolumeId = null } = volume;
    return { id, name, sizeInKb, storagePoolId, volumeType, ancestorVolumeId, mappedSdcInfo: mappedSdcInfo.length ? mappedSdcInfo : null };
  }

  /** snapshotVolumes: each snapshot a new volume of its source's size, pool and type, data included. */
  private async snapshotVolumes(systemId: string, body: { snapshotDefs?: { volumeId?: string; snapshotName?: string }[] }) {
    if (systemId !== this.systemId) throw new Refusal(0, `Could not find the system ${systemId}`, 404);
    this.refusedNow('snapshotVolumes');
    const defs = body.snapshotDefs ?? [];
    if (defs.length === 0) throw new Refusal(0, 'snapshotDefs is empty', 400);
    const made: SimVolume[] = [];
    for (const def of defs) {
      const source = this.volume(def.volumeId ?? '');
      const name = def.snapshotName ?? '';
      this.checkName(name);
      if (this.volumeByName(name) || made.some((v) => v.name === name)) throw new Refusal(6, 'Volume name already in use');
      made.push({ id: hex16(), name, sizeInKb: source.sizeInKb, storagePoolId: source.storagePoolId, volumeType: source.volumeType, mappedHosts: [], ancestorVolumeId: source.id, limits: new Map() });
    }
    for (const [i, snapshot] of made.entries()) {
      this.volumes.set(snapshot.id, snapshot);
      await this.options.dataPlane?.snapshotted?.(this.volume(defs[i]!.volumeId!), snapshot);
    }
    return { volumeIdList: made.map((v) => v.id), snapshotGroupId: hex16() };
  }

  private checkName(name: string): void {
    if (!/^[A-Za-z0-9_.:-]{1,31}$/.test(name)) throw new Refusal(7, `Invalid name ${name}: at most 31 letters, digits and _.:-`);
  }

  private async createVolume(body: Record<string, string>) {
    const { name = '', storagePoolId = '', volumeType = 'ThinProvisioned' } = body;
    const sizeInKb = Number(body.volumeSizeInKb);
    this.checkName(name);
    if (this.volumeByName(name)) throw new Refusal(6, 'Volume name already in use');
    const pool = [...this.domains.values()].flatMap((d) => [...d.pools.values()]).find((p) => p.id === storagePoolId);
    if (!pool) throw new Refusal(142, 'Could not find the storage pool');
    if (!Number.isInteger(sizeInKb) || sizeInKb <= 0 || sizeInKb % KB_PER_STEP) throw new Refusal(8, 'Volume size must be a multiple of 8 GB');
    if (sizeInKb > this.freeKb(pool.id, pool.capacityKb)) throw new Refusal(16, 'Not enough free capacity in the storage pool');
    const volume: SimVolume = { id: hex16(), name, sizeInKb, storagePoolId: pool.id, volumeType, mappedHosts: [], limits: new Map() };
    this.volumes.set(volume.id, volume);
    await this.options.dataPlane?.created(volume);
    return { id: volume.id };
  }

  /** Thin snapshots share their ancestor's capacity until written: only volumes count. */
  private freeKb(poolId: string, capacityKb: number): number {
    const used = [...this.volumes.values()].filter((v) => v.storagePoolId === poolId && !v.ancestorVolumeId).reduce((sum, v) => sum + v.sizeInKb, 0);
    return capacityKb - used;
  }

  private refusedNow(action: string): void {
    if (this.refuseNext?.action !== action) return;
    const { message } = this.refuseNext;
    this.refuseNext = undefined;
    throw new Refusal(16, message);
  }

  private async volumeAction(volume: SimVolume, action: string, body: Record<string, string>) {
    this.refusedNow(action);
    if (action === 'addMappedHost') {
      const host = this.hosts.get(body.hostId ?? '');
      if (!host) throw new Refusal(3, `Could not find the host ${body.hostId}`);
      if (volume.mappedHosts.includes(host.id)) throw new Refusal(81, 'The volume is already mapped to this host');
      if (volume.mappedHosts.length > 0 && String(body.allowMultipleMappings).toUpperCase() !== 'TRUE') throw new Refusal(306, 'Only a single SDC may be mapped to this volume at a time');
      volume.mappedHosts.push(host.id);
      await this.options.dataPlane?.mapped(volume, host);
    } else if (action === 'removeMappedHost') {
      const host = this.hosts.get(body.hostId ?? '');
      if (!host || !volume.mappedHosts.includes(host.id)) throw new Refusal(4039, 'The volume is not mapped to this host');
      volume.mappedHosts = volume.mappedHosts.filter((id) => id !== host.id);
      volume.limits.delete(host.id);
      await this.options.dataPlane?.unmapped(volume, host);
    } else if (action === 'setMappedSdcLimits') {
      this.setLimits(volume, body);
    } else if (action === 'setVolumeSize') {
      const sizeInKb = Number(body.sizeInGB) * 1024 * 1024;
      if (!Number.isInteger(sizeInKb) || sizeInKb % KB_PER_STEP) throw new Refusal(8, 'Volume size must be a multiple of 8 GB');
      if (sizeInKb < volume.sizeInKb) throw new Refusal(9, 'The volume cannot shrink');
      volume.sizeInKb = sizeInKb;
      await this.options.dataPlane?.resized(volume);
    } else if (action === 'removeVolume') {
      if (volume.mappedHosts.length > 0) throw new Refusal(10, 'The volume is mapped; unmap it first');
      this.volumes.delete(volume.id);
      await this.options.dataPlane?.removed(volume);
    } else {
      throw new Refusal(0, `unknown action ${action}`, 404);
    }
    return {};
  }

  /** PyPowerFlex's rules: an IOPS limit above 10 (0 unlimited), bandwidth in KiB/s granular to 1024; strings. */
  private setLimits(volume: SimVolume, body: Record<string, string>): void {
    const sdcId = body.sdcId ?? '';
    if (!volume.mappedHosts.includes(sdcId)) throw new Refusal(4039, 'The volume is not mapped to this host');
    const iopsLimit = Number(body.iopsLimit ?? 0);
    const bandwidthLimitInKbps = Number(body.bandwidthLimitInKbps ?? 0);
    if (!Number.isInteger(iopsLimit) || iopsLimit < 0 || (iopsLimit > 0 && iopsLimit <= 10)) throw new Refusal(11, `Invalid IOPS limit ${body.iopsLimit}: must be greater than 10`);
    if (!Number.isInteger(bandwidthLimitInKbps) || bandwidthLimitInKbps < 0 || bandwidthLimitInKbps % 1024) throw new Refusal(11, `Invalid bandwidth limit ${body.bandwidthLimitInKbps}: must be granular to 1024 KB`);
    volume.limits.set(sdcId, { iopsLimit, bandwidthLimitInKbps });
  }

  private addHost(body: { name?: string; nqn?: string }) {
    const { name = '', nqn = '' } = body;
    if (!/^nqn\./.test(nqn)) throw new Refusal(3, `Invalid NQN ${nqn}`);
    if ([...this.hosts.values()].some((h) => h.nqn === nqn)) throw new Refusal(3, `A host with NQN ${nqn} already exists`);
    this.checkName(name);
    const host = { id: hex16(), name, nqn };
    this.hosts.set(host.id, host);
    return { id: host.id };
  }
}
