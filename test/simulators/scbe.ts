import { randomBytes } from 'node:crypto';
import type express from 'express';
import type { Request, Response } from 'express';
import { handler, LoopbackSim } from './loopback-http.js';

// IBM Spectrum Connect (SCBE) on loopback, written from IBM's own clients (the Flocker driver's
// ibm_scbe_client, Ubiquity's local/scbe): a token from /users/get-auth-token ("Token <t>"),
// storage services, volumes named by their SCSI identifier, hosts pre-defined on the storage
// system (no call defines one), mappings with LUN numbers. The words of its refusals are this
// simulator's own. A data plane (tgtd) makes each mapping a real LUN of the storage system's
// one target, its host's IQN bound to the target: tgt has no per-host LUN views, so every bound
// host sees every LUN of the target, where the real system shows a host only its own.

export interface ScbeSimVolume {
  wwn: string;
  index: number;
  name: string;
  service: string;
  sizeGiB: number;
}

export interface ScbeSimHost {
  id: number;
  name: string;
  iqn: string;
}

export interface ScbeDataPlane {
  created(volume: ScbeSimVolume): Promise<void>;
  removed(volume: ScbeSimVolume): Promise<void>;
  mapped(volume: ScbeSimVolume, host: ScbeSimHost, lun: number): Promise<void>;
  unmapped(volume: ScbeSimVolume, host: ScbeSimHost, lun: number, hostStillMapped: boolean): Promise<void>;
}

export interface ScbeSimOptions {
  username: string;
  password: string;
  /** Service name -> free GiB. */
  services?: Record<string, number>;
  /** Hosts defined on the storage system: name -> IQN. */
  hosts: Record<string, string>;
  dataPlane?: ScbeDataPlane;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class ScbeSim extends LoopbackSim {
  readonly volumes = new Map<string, ScbeSimVolume>();
  readonly hosts: ScbeSimHost[];
  readonly mappings: { id: number; volume: string; host: number; lun_number: number }[] = [];
  readonly services: { id: string; name: string; freeGiB: number }[];
  private readonly tokens = new Set<string>();
  private next = 1;

  constructor(private readonly options: ScbeSimOptions) {
    super();
    this.services = Object.entries(options.services ?? { gold: 64 }).map(([name, freeGiB]) => ({ id: randomBytes(16).toString('hex'), name, freeGiB }));
    this.hosts = Object.entries(options.hosts).map(([name, iqn]) => ({ id: this.next++, name, iqn }));
  }

  protected routes(app: express.Express): void {
    const h = (status: number, fn: (req: Request) => Promise<unknown> | unknown) => handler(fn, status);
    app.post('/api/v1/users/get-auth-token', (req, res) => {
      const { username, password } = (req.body ?? {}) as { username?: string; password?: string };
      if (username !== this.options.username || password !== this.options.password) return void res.status(400).json({ non_field_errors: ['Unable to log in with provided credentials.'] });
      const token = randomBytes(20).toString('hex');
      this.tokens.add(token);
      res.json({ token });
    });
    app.use('/api/v1', (req, res, next) => {
      const token = /^Token (\w+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (!token || !this.tokens.has(token)) return void res.status(401).json({ detail: 'Invalid token.' });
      if (!req.headers.referer) return void res.status(403).json({ detail: 'CSRF Failed: Referer checking failed - no Referer.' });
      next();
    });
    app.get('/api/v1/services', h(200, (req) => this.services.filter((s) => !req.query.name || s.name === req.query.name).map((s) => ({ id: s.id, name: s.name, physical_free: s.freeGiB * 2 ** 30 }))));
    app.post('/api/v1/volumes', h(201, (req) => this.createVolume(req.body)));
    app.delete('/api/v1/volumes/:wwn', h(204, (req) => this.deleteVolume(String(req.params.wwn))));
    app.get('/api/v1/hosts', h(200, (req) => this.hosts.filter((x) => !req.query.name || x.name === req.query.name).map((x) => ({ id: x.id, name: x.name, host_id: x.id, array: 'sim-array' }))));
    app.get('/api/v1/mappings', h(200, (req) => this.mappings.filter((m) => m.volume === req.query.volume)));
    app.post('/api/v1/mappings', h(201, (req) => this.map(req.body)));
    app.delete('/api/v1/mappings', h(204, (req) => this.unmap(req.body)));
  }

  protected errorReply(err: unknown, res: Response): void {
    const r = err instanceof Refusal ? err : new Refusal(500, String(err));
    res.status(r.status).json({ detail: r.message });
  }

  expireTokens(): void {
    this.tokens.clear();
  }

  volumeNamed(name: string): ScbeSimVolume | undefined {
    return [...this.volumes.values()].find((v) => v.name === name);
  }

  /** The names of the hosts a volume is mapped to. */
  mappedHostNames(wwn: string): string[] {
    return this.mappings.filter((m) => m.volume === wwn).map((m) => this.hosts.find((x) => x.id === m.host)!.name);
  }

  private async createVolume(body: { service?: string; name?: string; size?: number; size_unit?: string }) {
    const service = this.services.find((s) => s.id === body.service);
    if (!service) throw new Refusal(400, `service ${String(body.service)} does not exist`);
    if (body.size_unit !== 'gb' || !Number.isInteger(body.size) || body.size! <= 0) throw new Refusal(400, 'size must be a whole number with size_unit "gb"');
    if (body.size! > service.freeGiB) throw new Refusal(400, `Not enough free space in service ${service.name}`);
    service.freeGiB -= body.size!;
    const index = this.next++;
    const volume = { wwn: `6001738c7c805a${index.toString(16).padStart(18, '0')}`, index, name: body.name ?? '', service: service.id, sizeGiB: body.size! };
    this.volumes.set(volume.wwn, volume);
    await this.options.dataPlane?.created(volume);
    return { scsi_identifier: volume.wwn, name: volume.name, volume_id: volume.wwn, service_name: service.name, array: 'sim-array', logical_capacity: volume.sizeGiB * 2 ** 30 };
  }

  private async deleteVolume(wwn: string) {
    const volume = this.volumes.get(wwn);
    if (!volume) throw new Refusal(404, `volume ${wwn} does not exist`);
    if (this.mappings.some((m) => m.volume === wwn)) throw new Refusal(400, `volume ${wwn} is mapped; unmap it first`);
    this.volumes.delete(wwn);
    this.services.find((s) => s.id === volume.service)!.freeGiB += volume.sizeGiB;
    await this.options.dataPlane?.removed(volume);
  }

  private async map(body: { volume_id?: string; host_id?: string | number }) {
    const volume = this.volumes.get(String(body.volume_id));
    const host = this.hosts.find((x) => String(x.id) === String(body.host_id));
    if (!volume || !host) throw new Refusal(400, `volume ${String(body.volume_id)} or host ${String(body.host_id)} does not exist`);
    if (this.mappings.some((m) => m.volume === volume.wwn && m.host === host.id)) throw new Refusal(400, `volume ${volume.wwn} is already mapped to host ${host.name}`);
    const mapping = { id: this.next++, volume: volume.wwn, host: host.id, lun_number: volume.index };
    this.mappings.push(mapping);
    await this.options.dataPlane?.mapped(volume, host, mapping.lun_number);
    return { mappings: [mapping] };
  }

  private async unmap(body: { volume_id?: string; host_id?: string | number }) {
    const at = this.mappings.findIndex((m) => m.volume === String(body.volume_id) && String(m.host) === String(body.host_id));
    if (at < 0) throw new Refusal(404, `volume ${String(body.volume_id)} is not mapped to host ${String(body.host_id)}`);
    const [mapping] = this.mappings.splice(at, 1);
    const host = this.hosts.find((x) => x.id === mapping!.host)!;
    await this.options.dataPlane?.unmapped(this.volumes.get(mapping!.volume)!, host, mapping!.lun_number, this.mappings.some((m) => m.host === host.id));
  }
}
