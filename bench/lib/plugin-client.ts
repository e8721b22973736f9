import { request } from 'node:http';

export interface Reply<T> {
  status: number;
  body: T;
  /** Size of the reply body in bytes. */
  bytes: number;
  /** Wall time from sending the request to the last byte of the reply, in ms. */
  ms: number;
}

/**
 * One call of Docker's plugin protocol over a Unix socket, as dockerd makes it: POST /<Method>,
 * a JSON body, a fresh connection (ballast closes every connection after its reply).
 */
export function callPlugin<T = Record<string, unknown>>(socketPath: string, method: string, body: object = {}, timeoutMs = 30_000): Promise<Reply<T>> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request(
      {
        socketPath,
        path: `/${method}`,
        method: 'POST',
        agent: false,
        headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': payload.length },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const elapsed = performance.now() - started;
          const raw = Buffer.concat(chunks);
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(raw.toString()) as T, bytes: raw.length, ms: elapsed });
          } catch (err) {
            reject(new Error(`${method} on ${socketPath}: reply is not JSON: ${raw.toString().slice(0, 200)}`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} on ${socketPath}: no reply within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** callPlugin, failing unless the reply is 200 with an empty Err. */
export async function callOk<T = Record<string, unknown>>(socketPath: string, method: string, body: object = {}, timeoutMs = 30_000): Promise<Reply<T>> {
  const reply = await callPlugin<T & { Err?: string }>(socketPath, method, body, timeoutMs);
  if (reply.status !== 200 || reply.body.Err) {
    throw new Error(`${method} ${JSON.stringify(body)}: HTTP ${reply.status}: ${reply.body.Err ?? JSON.stringify(reply.body)}`);
  }
  return reply;
}
