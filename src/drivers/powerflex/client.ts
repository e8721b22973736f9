import https from 'node:https';
import axios, { type AxiosInstance, type AxiosResponse, type Method } from 'axios';
import { Mutex } from 'async-mutex';
import { BackendUnavailable, errorMessage, redact, secretForms } from '../../errors.js';
import type { Logger } from '../../log.js';

export interface PowerFlexClientOptions {
  /** The gateway, "https://powerflex.example.com". */
  url: string;
  /** 3: GET /api/login, then Basic user:token. 4: POST /rest/auth/login, then a Bearer token. */
  apiVersion: 3 | 4;
  username: string;
  password: string;
  /** PEM the gateway's certificate must chain to; default: the system's CAs. */
  caPem?: string;
  /** Bound on each API call. */
  timeoutMs: number;
}

/**
 * The gateway's own error codes ballast acts on (from Cinder's and goscaleio's clients):
 * 79 no volume of that name, 81 already mapped to this host, 84 / 4039 not mapped,
 * 306 "Only a single SDC may be mapped to this volume at a time".
 */
export const ERR = { volumeNotFound: 79, alreadyMappedHere: 81, notMapped: 84, hostNotMapped: 4039, singleMapping: 306 } as const;

/** A reply the gateway gave with an error body: {message, httpStatusCode, errorCode}. */
export class PowerFlexRefusal extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: number | undefined,
    readonly what: string,
    readonly detail: string,
  ) {
    super(`PowerFlex refused to ${what} (HTTP ${status}${errorCode === undefined ? '' : `, error ${errorCode}`}): ${detail}`);
  }
}

/**
 * The PowerFlex gateway calls ballast makes: logs in on first use in the gateway's style
 * (3.x token over Basic, 4.x Bearer), logs in again once when a call answers 401 (a session
 * the gateway expired), bounds every call. The gateway reports most faults as HTTP 500 with an
 * errorCode, so any reply with an errorCode is a PowerFlexRefusal for the caller to judge; no
 * answer, TLS failures and bare 5xx are BackendUnavailable naming the gateway. The password is
 * only ever in a login request's header or body.
 */
export class PowerFlexClient {
  /** Round trips per "METHOD /path-pattern": what the benchmark reports. */
  readonly calls = new Map<string, number>();
  private readonly http: AxiosInstance;
  private token: string | undefined;
  private readonly loginLock = new Mutex();
  /** Masked in whatever the gateway says back (it could echo the login request). */
  private readonly secrets: string[];

  constructor(
    private readonly options: PowerFlexClientOptions,
    private readonly log: Logger,
  ) {
    this.secrets = secretForms(options.username, options.password);
    this.http = axios.create({
      baseURL: options.url.replace(/\/+$/, ''),
      timeout: options.timeoutMs,
      validateStatus: () => true,
      maxRedirects: 0,
      ...(options.caPem ? { httpsAgent: new https.Agent({ ca: options.caPem }) } : {}),
    });
  }

  get endpoint(): string {
    return this.options.url.replace(/\/+$/, '');
  }

  /** `path` from the gateway root, "/api/types/Volume/instances". `what` says what the call does, for errors. */
  async call<T>(method: Method, path: string, what: string, body?: unknown): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      const auth = await this.authorization();
      this.count(method, path);
      const reply = await this.send(method, path, what, body, auth);
      if (reply.status === 401 && attempt === 1) {
        this.log.info('the PowerFlex gateway answered 401: logging in again', { call: `${method} ${path}` });
        this.token = undefined;
        continue;
      }
      if (reply.status >= 200 && reply.status < 300) return reply.data as T;
      throw this.refusal(reply, what);
    }
  }

  private async send(method: Method, path: string, what: string, body: unknown, authorization: string): Promise<AxiosResponse> {
    try {
      return await this.http.request({ method, url: path, data: body, headers: { Authorization: authorization, Accept: 'application/json' } });
    } catch (err) {
      const code = (err as { code?: string }).code;
      const why = code === 'ECONNABORTED' || code === 'ETIMEDOUT' ? `no answer within ${this.options.timeoutMs / 1000} s` : errorMessage(err);
      throw new BackendUnavailable(`the PowerFlex gateway at ${this.endpoint} is unreachable, could not ${what}: ${why}; check backends.powerflex.url`);
    }
  }

  private refusal(reply: AxiosResponse, what: string): Error {
    const body = reply.data as { message?: unknown; errorCode?: unknown } | undefined;
    // A server may quote the request: the session token too (3.x sends it as Basic user:token).
    const secrets = [...this.secrets, ...(this.token ? secretForms(this.options.username, this.token) : [])];
    const detail = redact(typeof body?.message === 'string' ? body.message : typeof reply.data === 'string' && reply.data ? reply.data.slice(0, 300) : 'no message', secrets);
    const errorCode = typeof body?.errorCode === 'number' ? body.errorCode : undefined;
    if (errorCode !== undefined || (reply.status >= 400 && reply.status < 500)) return new PowerFlexRefusal(reply.status, errorCode, what, detail);
    return new BackendUnavailable(`the PowerFlex gateway at ${this.endpoint} failed to ${what} (HTTP ${reply.status}): ${detail}`);
  }

  private async authorization(): Promise<string> {
    const token = this.token ?? (await this.loginLock.runExclusive(async () => (this.token ??= await this.login())));
    return this.options.apiVersion === 3 ? basic(this.options.username, token) : `Bearer ${token}`;
  }

  private async login(): Promise<string> {
    const { apiVersion, username, password } = this.options;
    const path = apiVersion === 3 ? '/api/login' : '/rest/auth/login';
    this.count(apiVersion === 3 ? 'GET' : 'POST', path);
    let reply: AxiosResponse;
    try {
      reply = apiVersion === 3 ? await this.http.get(path, { headers: { Authorization: basic(username, password) } }) : await this.http.post(path, { username, password });
    } catch (err) {
      throw new BackendUnavailable(`the PowerFlex gateway at ${this.endpoint} is unreachable, could not log in: ${errorMessage(err)}; check backends.powerflex.url`);
    }
    if (reply.status === 401 || reply.status === 403) {
      throw new BackendUnavailable(`the PowerFlex gateway at ${this.endpoint} refused user ${username}: check backends.powerflex.user and its password_file`);
    }
    const token = apiVersion === 3 ? reply.data : (reply.data as { access_token?: unknown } | undefined)?.access_token;
    if (reply.status !== 200 || typeof token !== 'string' || !token) {
      const hint = reply.status === 404 ? `; is backends.powerflex.api_version (${apiVersion}) the gateway's?` : '';
      throw new BackendUnavailable(`the PowerFlex gateway at ${this.endpoint} did not issue a token (HTTP ${reply.status} from ${path})${hint}`);
    }
    this.log.info('logged in to the PowerFlex gateway', { gateway: this.endpoint, user: username, apiVersion });
    return token;
  }

  private count(method: string, path: string): void {
    const key = `${method.toUpperCase()} ${path.replace(/::[^/]+/g, '::{id}')}`;
    this.calls.set(key, (this.calls.get(key) ?? 0) + 1);
  }
}

function basic(user: string, secret: string): string {
  return `Basic ${Buffer.from(`${user}:${secret}`).toString('base64')}`;
}
