import axios from 'axios';
import { request as httpRequest } from 'node:http';

/** Calls the running daemon's operator endpoints over its Unix socket. */
export async function callDaemon<T>(socketPath: string, method: string, body: object = {}): Promise<T> {
  let response;
  try {
    response = await axios.post(`http://localhost/${method}`, JSON.stringify(body), {
      socketPath,
      timeout: 120_000,
      transformResponse: (text: string) => text,
      validateStatus: () => true,
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      throw new Error(`ballast is not running on ${socketPath} (start it with 'ballast serve')`);
    }
    throw err;
  }
  const reply = JSON.parse(String(response.data)) as T & { Err?: string };
  if (reply.Err) throw new Error(reply.Err);
  return reply;
}

/**
 * Calls an operator endpoint that answers in JSON lines: `onLine` sees each line before the
 * last, which is the reply (its Err thrown). For calls that report progress as they go.
 */
export function callDaemonLines<T>(socketPath: string, method: string, body: object, onLine: (line: Record<string, unknown>) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ socketPath, path: `/${method}`, method: 'POST' }, (response) => {
      let pending = '';
      let last: (T & { Err?: string }) | undefined;
      response.setEncoding('utf8');
      const take = (text: string) => {
        if (!text.trim()) return;
        if (last) onLine(last as Record<string, unknown>);
        last = JSON.parse(text) as T & { Err?: string };
      };
      response.on('data', (chunk: string) => {
        pending += chunk;
        for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
          take(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
      });
      response.on('end', () => {
        take(pending); // a reply that is one JSON document without a newline
        if (!last) return reject(new Error(`ballast sent no reply to ${method}`));
        if (last.Err) return reject(new Error(last.Err));
        resolve(last);
      });
      response.on('error', reject);
    });
    request.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new Error(`ballast is not running on ${socketPath} (start it with 'ballast serve')`));
      else reject(err);
    });
    request.end(JSON.stringify(body));
  });
}
