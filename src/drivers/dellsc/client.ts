import https from 'node:https';
import axios, { type AxiosInstance, type AxiosResponse, type Method } from 'axios';
import { Mutex } from 'async-mutex';
import { BackendUnavailable, errorMessage, redact, secretForms } from '../../errors.js';
import type { Logger } from '../../log.js';

export interface DellScClientOptions {
  /** The Data Collector, "https://dsm:3033". */
  url: string;
  username: string;
  password: string;
  /** The x-dell-api-version asked for first. */
  apiVersion: string;
  caPem?: string;
  /** Bound on each call, and on each asynchronous task. */
  timeoutMs: number;
}

/** A 4xx the Data Collector gave: the caller decides what it means. */
export class DellScRefusal extends Error {
  constructor(
    readonly status: number,
    readonly what: string,
    readonly detail: string,
  ) {
    super(`Dell Storage Manager refused to ${what} (HTTP ${status}): ${detail}`);
  }
}

/** What a call made with `async: True` answers while the task runs: poll returnValue until it is the result. */
interface AsyncTask {
  objectType: 'AsyncTask';
  returnValue: string;
  status?: string;
  message?: string;
}

const isAsyncTask = (body: unknown): body is AsyncTask => (body as { objectType?: unknown } | null)?.objectType === 'AsyncTask';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The message in a DSM error body ({"result": {"message"}} or {"message"}), or its text. */
function faultMessage(body: unknown): string {
  const b = body as { result?: { message?: unknown }; message?: unknown } | null;
  const message = b?.result?.message ?? b?.message;
  if (typeof message === 'string') return message;
  return typeof body === 'string' && body ? body.slice(0, 300) : 'no message';
}

/**
 * The Dell Storage Manager REST calls ballast makes (as Cinder's storagecenter_api does): HTTP
 * Basic login to ApiConnection/Login, then the session cookie; the x-dell-api-version header,
 * asked again once with the version a refusal names; a 401 (the session expired) logs in again
 * once; `async: True` calls are polled to their result within the bound. The password is only in
 * the login request's header.
 */
export class DellScClient {
  /** Round trips per "METHOD /path-pattern": what the benchmark reports. */
  readonly calls = new Map<string, number>();
  private readonly http: AxiosInstance;
  private cookie: string | undefined;
  private apiVersion: string;
  private readonly loginLock = new Mutex();
  /** Masked in whatever the Data Collector says back (it could echo the login request). */
  private readonly secrets: string[];

  constructor(
    private readonly options: DellScClientOptions,
    private readonly log: Logger,
  ) {
    this.apiVersion = options.apiVersion;
    this.secrets = secretForms(options.username, options.password);
    this.http = axios.create({
      baseURL: `${options.url.replace(/\/+$/, '')}/api/rest/`,
      timeout: options.timeoutMs,
      validateStatus: () => true,
      maxRedirects: 0,
      ...(options.caPem ? { httpsAgent: new https.Agent({ ca: options.caPem }) } : {}),
    });
  }

  get endpoint(): string {
    return this.options.url.replace(/\/+$/, '');
  }

  /** `path` below /api/rest, "StorageCenter/ScVolume". With `async`, waits for the task's result. */
  async call<T>(method: Method, path: string, what: string, body?: unknown, options: { async?: boolean } = {}): Promise<T> {
    const deadline = performance.now() + this.options.timeoutMs;
    for (let attempt = 1; ; attempt += 1) {
      const cookie = await this.session();
      const reply = await this.send(method, path, what, body, { Cookie: cookie, ...(options.async ? { async: 'True' } : {}) });
      if (reply.status === 401 && attempt === 1) {
        this.log.info('Dell Storage Manager answered 401: logging in again', { call: `${method} ${path}` });
        this.cookie = undefined;
        continue;
      }
      if (reply.status < 200 || reply.status >= 300) throw this.refusal(reply, what);
      return isAsyncTask(reply.data) ? this.awaitTask<T>(reply.data, what, deadline) : (reply.data as T);
    }
  }

  private async awaitTask<T>(task: AsyncTask, what: string, deadline: number): Promise<T> {
    for (let pause = 100; ; pause = Math.min(pause * 2, 1_000)) {
      if (task.status === 'Error') throw new DellScRefusal(400, what, redact(task.message ?? 'the task failed', this.masked));
      if (performance.now() > deadline) throw new BackendUnavailable(`Dell Storage Manager at ${this.endpoint} did not ${what} within ${this.options.timeoutMs / 1000} s (task ${task.returnValue} still running)`);
      await sleep(pause);
      const reply = await this.send('GET', task.returnValue.replace(/^\/?(api\/rest\/)?/, ''), what, undefined, { Cookie: await this.session() });
      if (reply.status < 200 || reply.status >= 300) throw this.refusal(reply, what);
      if (!isAsyncTask(reply.data)) return reply.data as T;
      task = reply.data;
    }
  }

  private async send(method: Method, path: string, what: string, body: unknown, headers: Record<string, string>): Promise<AxiosResponse> {
    this.count(method, path);
    try {
      return await this.http.request({ method, url: path, data: body, headers: { Accept: 'application/json', 'x-dell-api-version': this.apiVersion, ...headers } });
    } catch (err) {
      const code = (err as { code?: string }).code;
      const why = code === 'ECONNABORTED' || code === 'ETIMEDOUT' ? `no answer within ${this.options.timeoutMs / 1000} s` : errorMessage(err);
      throw new BackendUnavailable(`Dell Storage Manager at ${this.endpoint} is unreachable, could not ${what}: ${why}; check backends.dellsc.url`);
    }
  }

  private refusal(reply: AxiosResponse, what: string): Error {
    const detail = this.said(reply.data);
    if (reply.status >= 400 && reply.status < 500) return new DellScRefusal(reply.status, what, detail);
    return new BackendUnavailable(`Dell Storage Manager at ${this.endpoint} failed to ${what} (HTTP ${reply.status}): ${detail}`);
  }

  private said(body: unknown): string {
    return redact(faultMessage(body), this.masked);
  }

  /** The password's forms and the session cookie's values: what a server that quotes the request would show. */
  private get masked(): string[] {
    return [...this.secrets, ...(this.cookie?.split('; ').map((c) => c.slice(c.indexOf('=') + 1)) ?? [])];
  }

  private async session(): Promise<string> {
    return this.cookie ?? this.loginLock.runExclusive(async () => (this.cookie ??= await this.login()));
  }

  /** Logs in; a refusal naming another API version is tried once more with it. */
  private async login(): Promise<string> {
    const { username, password } = this.options;
    for (let attempt = 1; ; attempt += 1) {
      const authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
      const reply = await this.send('POST', 'ApiConnection/Login', 'log in', { Application: 'ballast', ApplicationVersion: '0.1' }, { Authorization: authorization });
      if (reply.status === 401 || reply.status === 403) throw new BackendUnavailable(`Dell Storage Manager at ${this.endpoint} refused user ${username}: check backends.dellsc.user and its password_file`);
      const named = reply.status === 400 && /version/i.test(this.said(reply.data)) ? this.said(reply.data).match(/\d+\.\d+/g)?.find((v) => v !== this.apiVersion) : undefined;
      if (named && named !== this.apiVersion && attempt === 1) {
        this.log.info('Dell Storage Manager asks for another API version', { asked: this.apiVersion, named });
        this.apiVersion = named;
        continue;
      }
      const cookie = ([] as string[]).concat(reply.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; ');
      if (reply.status !== 200 || !cookie) throw new BackendUnavailable(`Dell Storage Manager at ${this.endpoint} did not open a session (HTTP ${reply.status}): ${this.said(reply.data)}`);
      this.log.info('logged in to Dell Storage Manager', { dsm: this.endpoint, user: username, apiVersion: this.apiVersion });
      return cookie;
    }
  }

  private count(method: string, path: string): void {
    const key = `${method.toUpperCase()} ${path.split('/').map((segment) => (/^\d/.test(segment) ? '{id}' : segment)).join('/')}`;
    this.calls.set(key, (this.calls.get(key) ?? 0) + 1);
  }
}
