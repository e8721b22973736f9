import { createHash, X509Certificate } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import tls from 'node:tls';
import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import { Mutex } from 'async-mutex';
import { BackendUnavailable, errorMessage, redact, secretForms } from '../../errors.js';
import type { Logger } from '../../log.js';
import { asArray, envelope, isFault, moref, parseResponse, refOf, textOf, typeOf, VsphereFault, type MoRef, type SoapNode, type SoapObject } from './soap.js';

export interface VsphereClientOptions {
  /** "https://vcenter.example/sdk". */
  url: string;
  username: string;
  password: string;
  /** PEM the server's certificate must chain to; default: the system's CAs. */
  caPem?: string;
  /** Trust exactly the certificate with this SHA-256 or SHA-1 fingerprint (hex, colons optional). */
  thumbprint?: string;
  /** Bound on each API call and on each task wait. */
  timeoutMs: number;
}

/** What ServiceInstance.RetrieveServiceContent returns that ballast uses. */
export interface ServiceContent {
  fullName: string;
  rootFolder: MoRef;
  propertyCollector: MoRef;
  sessionManager: MoRef;
  searchIndex: MoRef;
  fileManager: MoRef;
  virtualDiskManager: MoRef;
}

/** Objects of one type and the properties wanted of them; `traverse` also reads the objects one of their properties names. */
export interface RetrieveGroup {
  objects: MoRef[];
  paths: string[];
  traverse?: { path: string; type: string; paths: string[] };
}

/** Round trips per method since the client was made: what the benchmark reports. */
export type CallCounts = Map<string, number>;

const SOAP_ACTION = 'urn:vim25/6.5';
const SERVICE_INSTANCE = moref('ServiceInstance', 'ServiceInstance');
const SESSION_COOKIE = 'vmware_soap_session';

/**
 * Properties vCenter could not return come back in a missingSet, each with its fault. Without
 * a session vcsim answers that way (a real vCenter faults the call): either way it is thrown,
 * so call() logs in again on NotAuthenticated.
 */
function throwMissing(result: SoapNode): void {
  for (const object of asArray(result?.objects)) {
    const missing = asArray(object.missingSet)[0];
    if (!missing) continue;
    const fault = missing.fault?.fault ?? {};
    throw new VsphereFault(typeOf(fault) ?? 'MissingProperty', `property ${textOf(missing.path)} of ${textOf(object.obj)}: ${textOf(missing.fault?.localizedMessage)}`, fault);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The few vSphere API calls ballast makes, over one logged-in session: logs in on first use,
 * logs in again when vCenter dropped the session (NotAuthenticated), bounds every call and
 * every task wait. Faults come back as VsphereFault; an unreachable or untrusted vCenter as
 * BackendUnavailable with what to check.
 */
export class VsphereClient {
  readonly calls: CallCounts = new Map();
  private readonly http: AxiosInstance;
  private readonly origin: string;
  private cookie: string | undefined;
  private content: ServiceContent | undefined;
  private agent: Promise<http.Agent> | undefined;
  private readonly loginLock = new Mutex();

  constructor(
    private readonly options: VsphereClientOptions,
    private readonly log: Logger,
  ) {
    this.origin = new URL(options.url).origin;
    this.http = axios.create({ timeout: options.timeoutMs, responseType: 'text', validateStatus: () => true, maxRedirects: 0, transformResponse: (data) => data });
  }

  get url(): string {
    return this.options.url;
  }

  /** The bound on each call and on each task wait (backends.vmdk.vcenter.timeout_seconds). */
  get timeoutMs(): number {
    return this.options.timeoutMs;
  }

  /** Method `method` on managed object `self`; logs in (again) as needed. */
  async call(method: string, self: MoRef, args: SoapObject = {}): Promise<SoapNode> {
    await this.session();
    try {
      return await this.send(method, self, args);
    } catch (err) {
      if (!isFault(err, 'NotAuthenticated')) throw err;
      this.log.info('vCenter session expired: logging in again', { vcenter: this.options.url, method });
      await this.relogin();
      return this.send(method, self, args);
    }
  }

  async serviceContent(): Promise<ServiceContent> {
    if (!this.content) {
      const sc = await this.send('RetrieveServiceContent', SERVICE_INSTANCE);
      this.content = {
        fullName: textOf(sc.about?.fullName),
        rootFolder: refOf(sc.rootFolder),
        propertyCollector: refOf(sc.propertyCollector),
        sessionManager: refOf(sc.sessionManager),
        searchIndex: refOf(sc.searchIndex),
        fileManager: refOf(sc.fileManager),
        virtualDiskManager: refOf(sc.virtualDiskManager),
      };
    }
    return this.content;
  }

  /** Logs in unless a session is open. Concurrent callers share one login. */
  async session(): Promise<void> {
    if (this.cookie) return;
    await this.loginLock.runExclusive(async () => {
      if (!this.cookie) await this.login();
    });
  }

  async logout(): Promise<void> {
    if (!this.cookie) return;
    const { sessionManager } = await this.serviceContent();
    await this.send('Logout', sessionManager).catch((err: unknown) => this.log.warn('vCenter logout failed', { error: errorMessage(err) }));
    this.cookie = undefined;
    this.agent?.then((agent) => agent.destroy()).catch(() => undefined);
    this.agent = undefined;
  }

  /** Properties `paths` of each object (all of one type), by object id. Missing objects are left out. */
  async properties(objects: MoRef[], paths: string[]): Promise<Map<string, Record<string, SoapNode>>> {
    if (!objects.length) return new Map();
    return this.retrieve([{ objects, paths }]);
  }

  /**
   * Several objects of several types in one RetrievePropertiesEx (one round trip): each group
   * is objects of one type with the paths wanted of them. `traverse` follows a property of the
   * objects to more objects (Datastore.vm to its VMs) whose `paths` come back too. By object id.
   */
  async retrieve(groups: RetrieveGroup[]): Promise<Map<string, Record<string, SoapNode>>> {
    const result = new Map<string, Record<string, SoapNode>>();
    const wanted = groups.filter((g) => g.objects.length);
    if (!wanted.length) return result;
    const { propertyCollector } = await this.serviceContent();
    // One property spec per type (a VM asked for directly and reached through a datastore too).
    const pathsByType = new Map<string, Set<string>>();
    const want = (type: string, paths: string[]) => pathsByType.set(type, new Set([...(pathsByType.get(type) ?? []), ...paths]));
    for (const g of wanted) {
      want(g.objects[0]!.type, g.paths);
      if (g.traverse) want(g.traverse.type, g.traverse.paths);
    }
    const propSet: SoapObject[] = [...pathsByType].map(([type, paths]) => ({ type, all: false, pathSet: [...paths] }));
    const objectSet = wanted.flatMap((g) =>
      g.objects.map((obj) => ({
        obj,
        ...(g.traverse ? { selectSet: [{ $type: 'TraversalSpec', name: `via-${g.traverse.path}`, type: obj.type, path: g.traverse.path, skip: false }] } : {}),
      })),
    );
    let answer = await this.call('RetrievePropertiesEx', propertyCollector, { specSet: { propSet, objectSet }, options: {} });
    for (;;) {
      for (const object of asArray(answer?.objects)) {
        const props: Record<string, SoapNode> = {};
        for (const prop of asArray(object.propSet)) props[textOf(prop.name)] = prop.val;
        result.set(refOf(object.obj).value, props);
      }
      const token = answer?.token ? textOf(answer.token) : undefined;
      if (!token) return result;
      answer = await this.call('ContinueRetrievePropertiesEx', propertyCollector, { token });
    }
  }

  /** One object's properties; throws when the object is gone. */
  async propertiesOf(object: MoRef, paths: string[]): Promise<Record<string, SoapNode>> {
    const props = (await this.properties([object], paths)).get(object.value);
    if (!props) throw new VsphereFault('ManagedObjectNotFound', `${object.type} ${object.value} does not exist`, {});
    return props;
  }

  /**
   * Waits for a task to end, within the client's bound; returns its result or throws its
   * fault. A task still running at the bound is left to vCenter and reported as such. `also`
   * is read in the same round trip as each poll: what the caller needs once the task is done
   * (a VM's devices after a reconfiguration), so it costs no call of its own. `boundMs` is longer
   * than the client's bound only for tasks whose time grows with the data (a disk copy).
   */
  async waitForTask(
    task: MoRef,
    what: string,
    also: RetrieveGroup[] = [],
    boundMs = this.options.timeoutMs,
  ): Promise<{ result: SoapNode; also: Map<string, Record<string, SoapNode>> }> {
    const deadline = Date.now() + boundMs;
    for (let pause = 25; ; pause = Math.min(pause * 2, 500)) {
      const read = await this.retrieve([{ objects: [task], paths: ['info'] }, ...also]);
      const taskProps = read.get(task.value);
      if (!taskProps) throw new VsphereFault('ManagedObjectNotFound', `${task.type} ${task.value} does not exist`, {});
      const info = taskProps.info ?? {};
      const state = textOf(info.state);
      if (state === 'success') return { result: info.result, also: read };
      if (state === 'error') {
        const fault = info.error?.fault ?? {};
        throw new VsphereFault(typeOf(fault) ?? 'TaskFailed', textOf(info.error?.localizedMessage), fault);
      }
      if (Date.now() + pause > deadline) {
        throw new BackendUnavailable(`vCenter task ${task.value} (${what}) was still ${state || 'queued'} after ${boundMs / 1000} s; check it in vCenter's task list`);
      }
      await sleep(pause);
    }
  }

  /** Runs a method that starts a task and waits for the task (at most `boundMs`, see waitForTask); returns the task's result. */
  async runTask(method: string, self: MoRef, args: SoapObject, what: string, boundMs?: number): Promise<SoapNode> {
    return (await this.waitForTask(refOf(await this.call(method, self, args)), what, [], boundMs)).result;
  }

  /** runTask, with `also` read in the poll that sees the task end (see waitForTask); by object id. */
  async runTaskThenRead(method: string, self: MoRef, args: SoapObject, what: string, also: RetrieveGroup[]): Promise<Map<string, Record<string, SoapNode>>> {
    return (await this.waitForTask(refOf(await this.call(method, self, args)), what, also)).also;
  }

  /**
   * HTTP access to datastore files (the /folder interface): GET (undefined when missing),
   * PUT, HEAD. `path` is relative to the datastore's root.
   */
  async datastoreFile(method: 'GET' | 'PUT' | 'HEAD', datacenter: string, datastore: string, path: string, data?: string): Promise<AxiosResponse<string> | undefined> {
    await this.session();
    const url = `${this.origin}/folder/${path.split('/').map(encodeURIComponent).join('/')}?dcPath=${encodeURIComponent(datacenter)}&dsName=${encodeURIComponent(datastore)}`;
    const send = async () => {
      this.count(`HTTP ${method}`);
      return this.http.request<string>({ method, url, data, headers: { Cookie: this.cookie ?? '', 'Content-Type': 'application/octet-stream' }, ...(await this.agentOptions()) });
    };
    let response = await this.transport(`${method} [${datastore}] ${path}`, send);
    if (response.status === 401 || response.status === 403) {
      await this.relogin();
      response = await this.transport(`${method} [${datastore}] ${path}`, send);
    }
    if (response.status === 404 && method !== 'PUT') return undefined;
    if (response.status >= 300) {
      throw new BackendUnavailable(`vCenter ${this.origin} answered ${method} of [${datastore}] ${path} with HTTP ${response.status}`);
    }
    return response;
  }

  private async login(): Promise<void> {
    const { sessionManager } = await this.serviceContent();
    const started = Date.now();
    try {
      await this.send('Login', sessionManager, { userName: this.options.username, password: this.options.password });
    } catch (err) {
      if (isFault(err, 'InvalidLogin')) {
        throw new BackendUnavailable(`vCenter ${this.options.url} refused the login of user ${this.options.username}: wrong user name or password (backends.vmdk.vcenter.user and password_file)`);
      }
      // A server that echoes the request back would have the password in the text of its answer.
      const secrets = secretForms(this.options.username, this.options.password);
      if (err instanceof VsphereFault) throw new VsphereFault(err.faultType, redact(err.faultString, secrets), err.detail);
      if (err instanceof Error && !(err instanceof BackendUnavailable)) throw new Error(redact(err.message, secrets));
      throw err;
    }
    this.log.info('logged in to vCenter', { vcenter: this.options.url, user: this.options.username, ms: Date.now() - started });
  }

  private async relogin(): Promise<void> {
    const stale = this.cookie;
    await this.loginLock.runExclusive(async () => {
      // Another call may have logged in again already.
      if (this.cookie === stale) {
        this.cookie = undefined;
        await this.login();
      }
    });
  }

  private count(method: string): void {
    this.calls.set(method, (this.calls.get(method) ?? 0) + 1);
  }

  private async send(method: string, self: MoRef, args: SoapObject = {}): Promise<SoapNode> {
    const result = await this.exchange(method, self, args);
    if (method === 'RetrievePropertiesEx' || method === 'ContinueRetrievePropertiesEx') throwMissing(result);
    return result;
  }

  private async exchange(method: string, self: MoRef, args: SoapObject): Promise<SoapNode> {
    const body = envelope(method, self, args);
    this.count(method);
    const response = await this.transport(method, async () =>
      this.http.post<string>(this.options.url, body, {
        headers: { 'Content-Type': 'text/xml; charset=utf-8', SOAPAction: SOAP_ACTION, ...(this.cookie ? { Cookie: this.cookie } : {}) },
        ...(await this.agentOptions()),
      }),
    );
    const setCookie = asArray(response.headers['set-cookie'] as string[] | undefined).find((c) => c.startsWith(`${SESSION_COOKIE}=`));
    if (setCookie && method === 'Login') this.cookie = setCookie.split(';')[0];
    if (response.status >= 400 && !/Fault>/.test(response.data)) {
      throw new BackendUnavailable(`vCenter ${this.options.url} answered ${method} with HTTP ${response.status}; is this the vSphere API URL (…/sdk)?`);
    }
    try {
      return parseResponse(method, response.data);
    } catch (err) {
      // A server that quotes the request would show the session cookie in its fault.
      const session = this.cookie?.slice(this.cookie.indexOf('=') + 1).replace(/^"|"$/g, '');
      if (err instanceof VsphereFault && session) throw new VsphereFault(err.faultType, redact(err.faultString, [session]), err.detail);
      throw err;
    }
  }

  /** One HTTP exchange, with network and certificate failures turned into what to check. */
  private async transport(what: string, exchange: () => Promise<AxiosResponse<string>>): Promise<AxiosResponse<string>> {
    try {
      return await exchange();
    } catch (err) {
      if (err instanceof BackendUnavailable) throw err;
      const code = (err as { code?: string }).code ?? '';
      const where = `vCenter ${this.options.url}`;
      if (code === 'ECONNABORTED' || code === 'ETIMEDOUT') throw new BackendUnavailable(`${where} did not answer ${what} within ${this.options.timeoutMs / 1000} s`);
      if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) {
        throw new BackendUnavailable(`${where} presented a certificate this host does not trust (${code}); set backends.vmdk.vcenter.ca_file to its CA, or thumbprint to its fingerprint`);
      }
      throw new BackendUnavailable(`${where} is unreachable (${what}): ${errorMessage(err)}`);
    }
  }

  private async agentOptions(): Promise<{ httpAgent?: http.Agent; httpsAgent?: https.Agent }> {
    this.agent ??= this.makeAgent().catch((err: unknown) => {
      this.agent = undefined;
      throw err;
    });
    const agent = await this.agent;
    return agent instanceof https.Agent ? { httpsAgent: agent } : { httpAgent: agent };
  }

  private async makeAgent(): Promise<http.Agent> {
    const url = new URL(this.options.url);
    if (url.protocol === 'http:') return new http.Agent({ keepAlive: true });
    if (!this.options.thumbprint) return new https.Agent({ keepAlive: true, ...(this.options.caPem ? { ca: this.options.caPem } : {}) });
    // Pinning: fetch the certificate once, compare fingerprints, then trust exactly that
    // certificate for every request (anything else then fails verification).
    const pem = await this.pinnedCertificate(url);
    return new https.Agent({ keepAlive: true, ca: pem, checkServerIdentity: () => undefined });
  }

  private pinnedCertificate(url: URL): Promise<string> {
    const wanted = this.options.thumbprint!.replace(/:/g, '').toLowerCase();
    const algorithm = wanted.length === 40 ? 'sha1' : 'sha256';
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ host: url.hostname, port: Number(url.port || 443), ...(isIP(url.hostname) ? {} : { servername: url.hostname }), rejectUnauthorized: false, timeout: this.options.timeoutMs }, () => {
        const raw = socket.getPeerCertificate().raw;
        socket.end();
        const seen = createHash(algorithm).update(raw).digest('hex');
        if (seen !== wanted) {
          reject(new BackendUnavailable(`vCenter ${this.options.url} presented a certificate with ${algorithm} fingerprint ${seen}, not the configured thumbprint; refusing to send credentials`));
          return;
        }
        resolve(new X509Certificate(raw).toString());
      });
      socket.on('timeout', () => socket.destroy(new Error(`no TLS handshake within ${this.options.timeoutMs / 1000} s`)));
      socket.on('error', (err) => reject(new BackendUnavailable(`vCenter ${this.options.url} is unreachable: ${errorMessage(err)}`)));
    });
  }
}
