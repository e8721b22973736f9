import { randomBytes } from 'node:crypto';
import type express from 'express';
import type { NextFunction, Request, Response } from 'express';
import { handler, LoopbackSim } from './loopback-http.js';

// A Dell Storage Manager Data Collector on loopback, written from the API facts in the research
// notes (Cinder's storagecenter_api, the Flocker SC driver): HTTP Basic login and a session
// cookie, x-dell-api-version checked at login, asynchronous tasks polled through AsyncTask,
// filtered GetList, folders, storage profiles, volumes, server objects with HBAs, mappings and
// controller ports, replays (CreateReplay, ReplayList, Expire) and view volumes of a replay
// (CreateView). The words of its refusals are this simulator's own (no public client shows
// them), except that a version refusal names the version it speaks. A data plane (tgtd) makes
// each volume a real LUN: its target is the volume's "controller port", and a mapping binds the
// server's IQN to it. Real SC has one target per controller port and per-server LUN views.

export interface ScSimVolume {
  instanceId: string;
  index: number;
  name: string;
  notes: string;
  folder: string;
  storageProfile?: string;
  sizeBytes: number;
  deviceId: string;
}

/** A replay: the volume's data frozen when it was taken. */
export interface ScSimReplay {
  instanceId: string;
  volume: string;
  description: string;
  /** Minutes until it expires by itself; 0: never. */
  expireTime: number;
  freezeTime: string;
  markedForExpiration: boolean;
  sizeBytes: number;
}

export interface ScDataPlane {
  /** A new volume, empty or (a view volume) starting with the replay's data. */
  created(volume: ScSimVolume, from?: ScSimReplay): Promise<void>;
  removed(volume: ScSimVolume): Promise<void>;
  /** The iSCSI target that serves the volume, and its portal. */
  target(volume: ScSimVolume): { iqn: string; address: string; port: number };
  mapped(volume: ScSimVolume, iqns: string[]): Promise<void>;
  unmapped(volume: ScSimVolume, iqns: string[]): Promise<void>;
  /** Freezes a copy of the volume's data for the replay (absent: replays hold no data). */
  replayed?(volume: ScSimVolume, replay: ScSimReplay): Promise<void>;
  /** Frees the replay's data. */
  expired?(replay: ScSimReplay): Promise<void>;
  /** The volume was expanded to its sizeBytes. */
  resized?(volume: ScSimVolume): Promise<void>;
}

export interface DellScSimOptions {
  username: string;
  password: string;
  ssn: number;
  /** The one API version the Data Collector speaks. */
  apiVersion?: string;
  capacityGiB?: number;
  dataPlane?: ScDataPlane;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Server_ {
  instanceId: string;
  name: string;
  hbas: string[];
}

interface MappingProfile {
  instanceId: string;
  volume: string;
  server: string;
  lun: number;
}

const GIB = 2 ** 30;

export class DellScSim extends LoopbackSim {
  readonly volumes = new Map<string, ScSimVolume>();
  readonly servers = new Map<string, Server_>();
  readonly mappings = new Map<string, MappingProfile>();
  readonly replays = new Map<string, ScSimReplay>();
  readonly folders = new Map<string, { instanceId: string; name: string; kind: string }>();
  readonly storageProfiles = [
    { instanceId: '', name: 'Recommended (All Tiers)' },
    { instanceId: '', name: 'High Priority (Tier 1)' },
  ];
  private readonly sessions = new Set<string>();
  private readonly tasks = new Map<string, { polls: number; result: () => Promise<unknown> }>();
  private next = 100;

  constructor(private readonly options: DellScSimOptions) {
    super();
    for (const p of this.storageProfiles) p.instanceId = this.id();
  }

  private id(): string {
    return `${this.options.ssn}.${this.next++}`;
  }

  private get speaks(): string {
    return this.options.apiVersion ?? '4.0';
  }

  protected routes(app: express.Express): void {
    // With async, a call made with the header "async: True" answers 202 and an AsyncTask.
    const h = (fn: (req: Request) => Promise<unknown> | unknown, async = false) => (req: Request, res: Response, next: NextFunction) => {
      if (async && String(req.headers.async).toLowerCase() === 'true') return void res.status(202).json(this.task(() => Promise.resolve(fn(req))));
      handler(fn)(req, res, next);
    };
    app.post('/api/rest/ApiConnection/Login', (req, res) => this.login(req, res));
    app.use('/api/rest', (req, res, next) => (this.sessionOk(req) ? next() : res.status(401).json({ result: { message: 'Not logged in' } })));
    app.post('/api/rest/ApiConnection/Logout', h(() => ({})));
    app.get('/api/rest/AsyncTask/:id', h((req) => this.poll(String(req.params.id))));
    app.post('/api/rest/StorageCenter/:type/GetList', h((req) => this.getList(String(req.params.type), req.body)));
    for (const kind of ['ScVolumeFolder', 'ScServerFolder']) app.post(`/api/rest/StorageCenter/${kind}`, h((req) => this.makeFolder(kind, req.body)));
    app.post('/api/rest/StorageCenter/ScVolume', h((req) => this.createVolume(req.body), true));
    app.get('/api/rest/StorageCenter/ScVolume/:id', h((req) => this.volume(String(req.params.id))));
    app.delete('/api/rest/StorageCenter/ScVolume/:id', h((req) => this.deleteVolume(String(req.params.id)), true));
    app.post('/api/rest/StorageCenter/ScVolume/:id/ExpandToSize', h((req) => this.expand(String(req.params.id), req.body)));
    app.post('/api/rest/StorageCenter/ScVolume/:id/MapToServer', h((req) => this.map(String(req.params.id), req.body), true));
    app.get('/api/rest/StorageCenter/ScVolume/:id/MappingProfileList', h((req) => this.profilesOf(String(req.params.id))));
    app.get('/api/rest/StorageCenter/ScVolume/:id/MappingList', h((req) => this.pathsOf(String(req.params.id))));
    app.post('/api/rest/StorageCenter/ScVolume/:id/CreateReplay', h((req) => this.createReplay(String(req.params.id), req.body), true));
    app.get('/api/rest/StorageCenter/ScVolume/:id/ReplayList', h((req) => this.replayList(String(req.params.id))));
    app.post('/api/rest/StorageCenter/ScReplay/:id/Expire', h((req) => this.expire(String(req.params.id)), true));
    app.post('/api/rest/StorageCenter/ScReplay/:id/CreateView', h((req) => this.createView(String(req.params.id), req.body), true));
    app.delete('/api/rest/StorageCenter/ScMappingProfile/:id', h((req) => this.unmap(String(req.params.id)), true));
    app.post('/api/rest/StorageCenter/ScPhysicalServer', h((req) => this.makeServer(req.body), true));
    app.post('/api/rest/StorageCenter/ScPhysicalServer/:id/AddHba', h((req) => this.addHba(String(req.params.id), req.body)));
    app.get('/api/rest/StorageCenter/ScControllerPort/:id', h((req) => ({ instanceId: String(req.params.id), iscsiName: this.target(String(req.params.id)).iqn })));
    app.get('/api/rest/StorageCenter/ScControllerPortIscsiConfiguration/:id', h((req) => {
      const t = this.target(String(req.params.id));
      return { instanceId: String(req.params.id), ipAddress: t.address, portNumber: t.port };
    }));
  }

  protected errorReply(err: unknown, res: Response): void {
    const r = err instanceof Refusal ? err : new Refusal(500, String(err));
    res.status(r.status).json({ result: { message: r.message } });
  }

  /** Ends every session, as the Data Collector does after its idle timeout. */
  expireSessions(): void {
    this.sessions.clear();
  }

  volumesNamed(name: string): ScSimVolume[] {
    return [...this.volumes.values()].filter((v) => v.name === name);
  }

  /** The replays of a volume that are not expired. */
  liveReplays(volumeId: string): ScSimReplay[] {
    return [...this.replays.values()].filter((r) => r.volume === volumeId && !r.markedForExpiration);
  }

  /** The IQNs of the servers a volume is mapped to. */
  mappedIqns(volumeId: string): string[] {
    return [...this.mappings.values()].filter((m) => m.volume === volumeId).flatMap((m) => this.servers.get(m.server)?.hbas ?? []);
  }

  private login(req: Request, res: Response): void {
    const [kind, value] = (req.headers.authorization ?? '').split(' ');
    if (kind !== 'Basic' || Buffer.from(value ?? '', 'base64').toString() !== `${this.options.username}:${this.options.password}`) return void res.status(401).json({ result: { message: 'Invalid user name or password' } });
    const asked = String(req.headers['x-dell-api-version'] ?? '');
    if (asked !== this.speaks) return void res.status(400).json({ result: { message: `API version ${asked} is not supported; this Data Collector speaks API version ${this.speaks}` } });
    const session = randomBytes(12).toString('hex');
    this.sessions.add(session);
    res.cookie('JSESSIONID', session, { httpOnly: true }).json({ apiVersion: this.speaks, provider: 'StorageCenter', connectionKey: '', instanceId: '0' });
  }

  private sessionOk(req: Request): boolean {
    const session = /JSESSIONID=([0-9a-f]+)/.exec(req.headers.cookie ?? '')?.[1];
    return session !== undefined && this.sessions.has(session) && req.headers['x-dell-api-version'] === this.speaks;
  }

  /** A task that answers AsyncTask on its first poll and its result on the second. */
  private task(result: () => Promise<unknown>) {
    const id = String(this.next++);
    this.tasks.set(id, { polls: 0, result });
    return { objectType: 'AsyncTask', instanceId: id, returnValue: `/api/rest/AsyncTask/${id}`, status: 'Running' };
  }

  private async poll(id: string) {
    const task = this.tasks.get(id);
    if (!task) throw new Refusal(404, `no task ${id}`);
    task.polls += 1;
    if (task.polls < 2) return { objectType: 'AsyncTask', instanceId: id, returnValue: `/api/rest/AsyncTask/${id}`, status: 'Running' };
    this.tasks.delete(id);
    try {
      return await task.result();
    } catch (err) {
      return { objectType: 'AsyncTask', instanceId: id, returnValue: `/api/rest/AsyncTask/${id}`, status: 'Error', message: err instanceof Error ? err.message : String(err) };
    }
  }

  private getList(type: string, body: { filter?: { filters?: { attributeName: string; attributeValue: unknown }[] } }) {
    const equals = new Map((body.filter?.filters ?? []).map((f) => [f.attributeName, String(f.attributeValue)]));
    if (equals.get('ScSerialNumber') !== String(this.options.ssn)) return [];
    if (type === 'ScStorageProfile') return this.storageProfiles;
    if (type === 'ScServerOperatingSystem') return [{ instanceId: `${this.options.ssn}.35`, name: 'Red Hat Linux 6.x' }, { instanceId: `${this.options.ssn}.36`, name: 'Windows 2016' }];
    if (type === 'ScVolumeFolder' || type === 'ScServerFolder') return [...this.folders.values()].filter((f) => f.kind === type && f.name === equals.get('Name'));
    if (type === 'ScServerHba') {
      const iqn = equals.get('instanceName');
      return [...this.servers.values()].filter((s) => s.hbas.includes(iqn ?? '')).map((s) => ({ instanceId: this.id(), instanceName: iqn, server: { instanceId: s.instanceId, instanceName: s.name } }));
    }
    throw new Refusal(400, `GetList of ${type} is not simulated`);
  }

  private makeFolder(kind: string, body: { Name?: string }) {
    const folder = { instanceId: this.id(), name: body.Name ?? '', kind };
    this.folders.set(folder.instanceId, folder);
    return folder;
  }

  private usedBytes(): number {
    return [...this.volumes.values()].reduce((sum, v) => sum + v.sizeBytes, 0);
  }

  private async createVolume(body: Record<string, unknown>) {
    const size = /^(\d+) GB$/.exec(String(body.Size ?? ''));
    if (!size) throw new Refusal(400, `Size must be "N GB", not ${String(body.Size)}`);
    if (String(body.StorageCenter) !== String(this.options.ssn)) throw new Refusal(400, `no Storage Center ${String(body.StorageCenter)}`);
    if (!this.folders.has(String(body.VolumeFolder))) throw new Refusal(400, `no volume folder ${String(body.VolumeFolder)}`);
    if (body.StorageProfile !== undefined && !this.storageProfiles.some((p) => p.instanceId === body.StorageProfile)) throw new Refusal(400, `no storage profile ${String(body.StorageProfile)}`);
    return this.addVolume(body, Number(size[1]) * GIB);
  }

  private async addVolume(body: Record<string, unknown>, sizeBytes: number, from?: ScSimReplay) {
    this.assertRoom(sizeBytes);
    const index = this.next++;
    const volume: ScSimVolume = {
      instanceId: `${this.options.ssn}.${index}`,
      index,
      name: String(body.Name ?? ''),
      notes: String(body.Notes ?? ''),
      folder: String(body.VolumeFolder),
      ...(body.StorageProfile ? { storageProfile: String(body.StorageProfile) } : {}),
      sizeBytes,
      deviceId: `6000d31000${this.options.ssn.toString(16).padStart(6, '0')}${index.toString(16).padStart(16, '0')}`,
    };
    this.volumes.set(volume.instanceId, volume);
    await this.options.dataPlane?.created(volume, from);
    return this.volume(volume.instanceId);
  }

  private assertRoom(moreBytes: number): void {
    if (this.usedBytes() + moreBytes > (this.options.capacityGiB ?? 1024) * GIB) throw new Refusal(400, 'Not enough free space on the Storage Center for a volume of that size');
  }

  private async createReplay(id: string, body: { description?: unknown; expireTime?: unknown }) {
    const v = this.volumes.get(id);
    if (!v) throw new Refusal(404, `no volume ${id}`);
    const replay: ScSimReplay = {
      instanceId: this.id(),
      volume: id,
      description: String(body.description ?? ''),
      expireTime: Number(body.expireTime ?? 0),
      freezeTime: new Date().toISOString(),
      markedForExpiration: false,
      sizeBytes: v.sizeBytes,
    };
    await this.options.dataPlane?.replayed?.(v, replay);
    this.replays.set(replay.instanceId, replay);
    return this.replayOf(replay);
  }

  private replayOf(r: ScSimReplay) {
    return { objectType: 'ScReplay', instanceId: r.instanceId, instanceName: r.freezeTime, description: r.description, freezeTime: r.freezeTime, expireTime: r.expireTime, markedForExpiration: r.markedForExpiration, parent: { instanceId: r.volume }, size: `${r.sizeBytes} Bytes` };
  }

  /** Every replay of the volume, expired ones (still being freed) included, oldest first. */
  private replayList(id: string) {
    if (!this.volumes.has(id)) throw new Refusal(404, `no volume ${id}`);
    return [...this.replays.values()].filter((r) => r.volume === id).map((r) => this.replayOf(r));
  }

  private async expire(id: string) {
    const r = this.replays.get(id);
    if (!r) throw new Refusal(404, `no replay ${id}`);
    if (!r.markedForExpiration) {
      r.markedForExpiration = true;
      await this.options.dataPlane?.expired?.(r);
    }
    return {};
  }

  private async createView(id: string, body: Record<string, unknown>) {
    const r = this.replays.get(id);
    if (!r || r.markedForExpiration) throw new Refusal(404, `no replay ${id}`);
    if (!this.folders.has(String(body.VolumeFolder))) throw new Refusal(400, `no volume folder ${String(body.VolumeFolder)}`);
    return this.addVolume(body, r.sizeBytes, r);
  }

  private volume(id: string) {
    const v = this.volumes.get(id);
    if (!v) throw new Refusal(404, `no volume ${id}`);
    return { objectType: 'ScVolume', instanceId: v.instanceId, instanceName: v.name, name: v.name, notes: v.notes, deviceId: v.deviceId, configuredSize: `${v.sizeBytes} Bytes`, active: this.profilesOf(id).length > 0 };
  }

  private async deleteVolume(id: string) {
    const v = this.volumes.get(id);
    if (!v) throw new Refusal(404, `no volume ${id}`);
    if (this.profilesOf(id).length) throw new Refusal(400, 'the volume is mapped; unmap it first');
    this.volumes.delete(id);
    await this.options.dataPlane?.removed(v);
    for (const r of [...this.replays.values()].filter((r) => r.volume === id)) {
      this.replays.delete(r.instanceId);
      if (!r.markedForExpiration) await this.options.dataPlane?.expired?.(r);
    }
    return {};
  }

  private async expand(id: string, body: { NewSize?: string }) {
    const v = this.volumes.get(id);
    if (!v) throw new Refusal(404, `no volume ${id}`);
    const size = /^(\d+) GB$/.exec(String(body.NewSize ?? ''));
    if (!size || Number(size[1]) * GIB < v.sizeBytes) throw new Refusal(400, `cannot expand to ${String(body.NewSize)}`);
    this.assertRoom(Number(size[1]) * GIB - v.sizeBytes);
    v.sizeBytes = Number(size[1]) * GIB;
    await this.options.dataPlane?.resized?.(v);
    return this.volume(id);
  }

  private async map(id: string, body: { server?: string }) {
    const v = this.volumes.get(id);
    const s = this.servers.get(String(body.server));
    if (!v || !s) throw new Refusal(400, `no volume ${id} or server ${String(body.server)}`);
    if (!this.profilesOf(id).some((m) => m.server.instanceId === s.instanceId)) {
      const profile = { instanceId: this.id(), volume: id, server: s.instanceId, lun: 1 };
      this.mappings.set(profile.instanceId, profile);
      await this.options.dataPlane?.mapped(v, s.hbas);
    }
    return { objectType: 'ScMappingProfile' };
  }

  private profilesOf(id: string) {
    return [...this.mappings.values()].filter((m) => m.volume === id).map((m) => ({ instanceId: m.instanceId, lun: m.lun, server: { instanceId: m.server, instanceName: this.servers.get(m.server)?.name } }));
  }

  /** One path per mapping: the volume's target as its controller port. */
  private pathsOf(id: string) {
    return [...this.mappings.values()]
      .filter((m) => m.volume === id)
      .map((m) => ({ instanceId: this.id(), lun: m.lun, status: 'Up', server: { instanceId: m.server }, controllerPort: { instanceId: `${id}.cp` } }));
  }

  private target(controllerPort: string) {
    const v = this.volumes.get(controllerPort.replace(/\.cp$/, ''));
    if (!v || !this.options.dataPlane) throw new Refusal(404, `no controller port ${controllerPort}`);
    return this.options.dataPlane.target(v);
  }

  private async unmap(id: string) {
    const m = this.mappings.get(id);
    if (!m) throw new Refusal(404, `no mapping profile ${id}`);
    this.mappings.delete(id);
    const v = this.volumes.get(m.volume);
    if (v) await this.options.dataPlane?.unmapped(v, this.servers.get(m.server)?.hbas ?? []);
    return {};
  }

  private makeServer(body: { Name?: string; OperatingSystem?: string }) {
    if (!body.Name) throw new Refusal(400, 'a server needs a Name');
    const server = { instanceId: this.id(), name: body.Name, hbas: [] as string[] };
    this.servers.set(server.instanceId, server);
    return { objectType: 'ScPhysicalServer', instanceId: server.instanceId, instanceName: server.name, name: server.name };
  }

  private addHba(id: string, body: { HbaPortType?: string; WwnOrIscsiName?: string }) {
    const s = this.servers.get(id);
    if (!s || body.HbaPortType !== 'Iscsi' || !body.WwnOrIscsiName) throw new Refusal(400, 'AddHba needs a server, HbaPortType Iscsi and WwnOrIscsiName');
    s.hbas.push(body.WwnOrIscsiName);
    return {};
  }
}
