import https from 'node:https';
import axios, { type AxiosInstance, type AxiosResponse, type Method } from 'axios';
import { Mutex } from 'async-mutex';
import { BackendUnavailable, errorMessage, redact, secretForms } from '../../errors.js';
import type { Logger } from '../../log.js';

/** Attachments need 3.27, `os-complete` 3.44; nothing newer is used. */
export const MICROVERSION = '3.44';

export type CinderAuth =
  /** Cinder's `auth_strategy = noauth` (labs): the token is "<user>:<project>". */
  | { kind: 'noauth'; projectId: string }
  /** Keystone v3 password authentication, scoped to a project. */
  | { kind: 'password'; authUrl: string; username: string; password: string; userDomain: string; project: string; projectDomain: string };

export interface CinderClientOptions {
  /** The Block Storage API root, "http://cinder:8776/v3": the project id is appended. */
  url: string;
  auth: CinderAuth;
  /** PEM the server's certificate must chain to; default: the system's CAs. */
  caPem?: string;
  /** Bound on each API call. */
  timeoutMs: number;
}

/** A reply Cinder gave with a 4xx status: the caller decides what it means. */
export class CinderRefusal extends Error {
  constructor(
    readonly status: number,
    readonly what: string,
    readonly detail: string,
  ) {
    super(`Cinder refused to ${what} (HTTP ${status}): ${detail}`);
  }
}

interface Session {
  token: string;
  projectId: string;
  /** Monotonic ms after which the token is renewed before use (Keystone's expiry minus a margin). */
  renewAfterMs: number;
}

/** The message in Cinder's and Keystone's error bodies: {"badRequest": {"message": ...}} or {"error": {"message": ...}}. */
export function faultMessage(body: unknown): string {
  if (body && typeof body === 'object') {
    for (const value of Object.values(body as Record<string, unknown>)) {
      const message = (value as { message?: unknown } | null)?.message;
      if (typeof message === 'string') return message;
    }
  }
  return typeof body === 'string' && body ? body.slice(0, 300) : 'no message';
}

/**
 * The Block Storage API v3 calls ballast makes: logs in on first use (Keystone, or noauth's
 * fixed token), logs in again once on a 401, bounds every call. Returns 2xx bodies; a 4xx comes
 * back as CinderRefusal, anything else (down, 5xx, timeout, untrusted TLS) as BackendUnavailable
 * naming the endpoint. The password is only ever in a request body.
 */
export class CinderClient {
  /** Round trips per "METHOD /path-pattern" since the client was made: what the benchmark reports. */
  readonly calls = new Map<string, number>();
  private readonly http: AxiosInstance;
  private session: Session | undefined;
  private readonly loginLock = new Mutex();

  constructor(
    private readonly options: CinderClientOptions,
    private readonly log: Logger,
  ) {
    this.http = axios.create({
      timeout: options.timeoutMs,
      validateStatus: () => true,
      maxRedirects: 0,
      ...(options.caPem ? { httpsAgent: new https.Agent({ ca: options.caPem }) } : {}),
    });
  }

  get endpoint(): string {
    return this.options.url.replace(/\/+$/, '');
  }

  /** `path` is below /v3/<project>, e.g. "/volumes/detail". `what` says what the call does, for errors. */
  async call<T>(method: Method, path: string, what: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; data: T; headers: AxiosResponse['headers'] }> {
    for (let attempt = 1; ; attempt += 1) {
      const session = await this.login();
      const url = `${this.endpoint}/${session.projectId}${path}`;
      this.count(method, path);
      let reply: AxiosResponse;
      try {
        reply = await this.http.request({
          method,
          url,
          data: body,
          headers: { 'X-Auth-Token': session.token, 'OpenStack-API-Version': `volume ${MICROVERSION}`, Accept: 'application/json', ...headers },
        });
      } catch (err) {
        throw this.unreachable(what, err);
      }
      if (reply.status === 401 && attempt === 1 && this.options.auth.kind === 'password') {
        this.log.info('Cinder answered 401: logging in to Keystone again', { call: `${method} ${path}` });
        this.session = undefined;
        continue;
      }
      if (reply.status >= 200 && reply.status < 300) return { status: reply.status, data: reply.data as T, headers: reply.headers };
      const detail = this.said(reply.data, session.token);
      if (reply.status >= 400 && reply.status < 500) throw new CinderRefusal(reply.status, what, detail);
      throw new BackendUnavailable(`Cinder at ${this.endpoint} failed to ${what} (HTTP ${reply.status}): ${detail}`);
    }
  }

  private async login(): Promise<Session> {
    const current = this.session;
    if (current && performance.now() < current.renewAfterMs) return current;
    return this.loginLock.runExclusive(async () => {
      if (this.session && performance.now() < this.session.renewAfterMs) return this.session;
      const auth = this.options.auth;
      this.session = auth.kind === 'noauth' ? { token: `ballast:${auth.projectId}`, projectId: auth.projectId, renewAfterMs: Infinity } : await this.keystone(auth);
      return this.session;
    });
  }

  private async keystone(auth: Extract<CinderAuth, { kind: 'password' }>): Promise<Session> {
    const url = `${auth.authUrl.replace(/\/+$/, '')}/auth/tokens`;
    const body = {
      auth: {
        identity: { methods: ['password'], password: { user: { name: auth.username, domain: { name: auth.userDomain }, password: auth.password } } },
        scope: { project: { name: auth.project, domain: { name: auth.projectDomain } } },
      },
    };
    this.count('POST', '/auth/tokens');
    let reply: AxiosResponse;
    try {
      reply = await this.http.post(url, body);
    } catch (err) {
      throw new BackendUnavailable(`Keystone at ${auth.authUrl} is unreachable: ${errorMessage(err)}; check backends.cinder.auth.auth_url`);
    }
    if (reply.status === 401) {
      throw new BackendUnavailable(`Keystone at ${auth.authUrl} refused user ${auth.username} (domain ${auth.userDomain}) for project ${auth.project}: check backends.cinder.auth and its password_file`);
    }
    const token = reply.headers['x-subject-token'] as string | undefined;
    const data = reply.data as { token?: { expires_at?: string; project?: { id?: string } } };
    const projectId = data.token?.project?.id;
    if (reply.status !== 201 || !token || !projectId) {
      throw new BackendUnavailable(`Keystone at ${auth.authUrl} did not issue a project token (HTTP ${reply.status}): ${this.said(reply.data)}`);
    }
    const lifetimeMs = Date.parse(data.token?.expires_at ?? '') - Date.now();
    // Renewed at 80% of its life (at most an hour), so a call never carries a token about to expire.
    const renewInMs = Number.isFinite(lifetimeMs) ? Math.min(lifetimeMs * 0.8, 3_600_000) : 600_000;
    this.log.info('logged in to Keystone', { user: auth.username, project: auth.project, projectId });
    return { token, projectId, renewAfterMs: performance.now() + renewInMs };
  }

  /** What Cinder or Keystone said, the password and the call's token masked (a server could echo the request). */
  private said(body: unknown, token?: string): string {
    const auth = this.options.auth;
    return auth.kind === 'password' ? redact(faultMessage(body), [...secretForms(auth.username, auth.password), ...(token ? [token] : [])]) : faultMessage(body);
  }

  private unreachable(what: string, err: unknown): BackendUnavailable {
    const code = (err as { code?: string }).code;
    const why = code === 'ECONNABORTED' || code === 'ETIMEDOUT' ? `no answer within ${this.options.timeoutMs / 1000} s` : errorMessage(err);
    return new BackendUnavailable(`Cinder at ${this.endpoint} is unreachable, could not ${what}: ${why}; check backends.cinder.url and that cinder-api runs`);
  }

  private count(method: string, path: string): void {
    const key = `${method.toUpperCase()} ${path.replace(/\?.*$/, '').replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '{id}')}`;
    this.calls.set(key, (this.calls.get(key) ?? 0) + 1);
  }
}
