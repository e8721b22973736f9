import https from 'node:https';
import axios, { type AxiosInstance, type AxiosResponse, type Method } from 'axios';
import { Mutex } from 'async-mutex';
import { BackendUnavailable, errorMessage, redact, secretForms } from '../../errors.js';
import type { Logger } from '../../log.js';

export interface ScbeClientOptions {
  /** Spectrum Connect, "https://scbe:8440". */
  url: string;
  username: string;
  password: string;
  group: string;
  caPem?: string;
  timeoutMs: number;
}

/** A 4xx Spectrum Connect gave: the caller decides what it means. */
export class ScbeRefusal extends Error {
  constructor(
    readonly status: number,
    readonly what: string,
    readonly detail: string,
  ) {
    super(`Spectrum Connect refused to ${what} (HTTP ${status}): ${detail}`);
  }
}

/** The message of a Spectrum Connect error body ({"detail"} from its Django REST framework, or {"message"}), or its text. */
function faultMessage(body: unknown): string {
  const b = body as { detail?: unknown; message?: unknown; error?: unknown } | null;
  const message = b?.detail ?? b?.message ?? b?.error;
  if (typeof message === 'string') return message;
  return typeof body === 'string' && body ? body.slice(0, 300) : 'no message';
}

/**
 * The Spectrum Connect (SCBE) REST calls ballast makes, as IBM's own clients do: a token from
 * /users/get-auth-token sent as "Authorization: Token <t>" with a referer header, one login
 * again on a 401 (an expired token), every call bounded. The password is only in the login body.
 */
export class ScbeClient {
  readonly calls = new Map<string, number>();
  private readonly http: AxiosInstance;
  private token: string | undefined;
  private readonly loginLock = new Mutex();
  /** Masked in whatever Spectrum Connect says back (it could echo the login request). */
  private readonly secrets: string[];

  constructor(
    private readonly options: ScbeClientOptions,
    private readonly log: Logger,
  ) {
    this.secrets = secretForms(options.username, options.password);
    this.http = axios.create({
      baseURL: `${this.endpoint}/api/v1`,
      timeout: options.timeoutMs,
      validateStatus: () => true,
      maxRedirects: 0,
      headers: { referer: this.endpoint, Accept: 'application/json' },
      ...(options.caPem ? { httpsAgent: new https.Agent({ ca: options.caPem }) } : {}),
    });
  }

  get endpoint(): string {
    return this.options.url.replace(/\/+$/, '');
  }

  /** `path` below /api/v1, "/volumes". */
  async call<T>(method: Method, path: string, what: string, body?: unknown): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      const token = this.token ?? (await this.loginLock.runExclusive(async () => (this.token ??= await this.login())));
      const reply = await this.send(method, path, what, body, { Authorization: `Token ${token}` });
      if (reply.status === 401 && attempt === 1) {
        this.log.info('Spectrum Connect answered 401: logging in again', { call: `${method} ${path}` });
        this.token = undefined;
        continue;
      }
      if (reply.status >= 200 && reply.status < 300) return reply.data as T;
      const detail = redact(faultMessage(reply.data), [...this.secrets, token]); // a server may quote the request
      if (reply.status >= 400 && reply.status < 500) throw new ScbeRefusal(reply.status, what, detail);
      throw new BackendUnavailable(`Spectrum Connect at ${this.endpoint} failed to ${what} (HTTP ${reply.status}): ${detail}`);
    }
  }

  private async send(method: Method, path: string, what: string, body: unknown, headers: Record<string, string>): Promise<AxiosResponse> {
    const key = `${method.toUpperCase()} ${path.replace(/\?.*$/, '').replace(/\/[0-9A-Fa-f]{16,}$/, '/{wwn}')}`;
    this.calls.set(key, (this.calls.get(key) ?? 0) + 1);
    try {
      return await this.http.request({ method, url: path, data: body, headers });
    } catch (err) {
      const code = (err as { code?: string }).code;
      const why = code === 'ECONNABORTED' || code === 'ETIMEDOUT' ? `no answer within ${this.options.timeoutMs / 1000} s` : errorMessage(err);
      throw new BackendUnavailable(`Spectrum Connect at ${this.endpoint} is unreachable, could not ${what}: ${why}; check backends.scbe.url`);
    }
  }

  private async login(): Promise<string> {
    const { username, password, group } = this.options;
    const reply = await this.send('POST', '/users/get-auth-token', 'log in', { username, password, group }, {});
    if (reply.status === 400 || reply.status === 401 || reply.status === 403) {
      throw new BackendUnavailable(`Spectrum Connect at ${this.endpoint} refused user ${username} (group ${group}): check backends.scbe.user, group and the password_file`);
    }
    const token = (reply.data as { token?: unknown } | undefined)?.token;
    if (reply.status !== 200 || typeof token !== 'string' || !token) throw new BackendUnavailable(`Spectrum Connect at ${this.endpoint} did not issue a token (HTTP ${reply.status}): ${redact(faultMessage(reply.data), this.secrets)}`);
    this.log.info('logged in to Spectrum Connect', { scbe: this.endpoint, user: username });
    return token;
  }
}
