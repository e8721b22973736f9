import { request } from 'node:http';

export interface PluginReply {
  status: number;
  body: Record<string, unknown> & { Err?: string; Mountpoint?: string };
}

/** Calls a plugin as dockerd does: POST, no Content-Type, the body as given, over a Unix socket. */
export function callPlugin(socketPath: string, method: string, body: string | object = '', timeoutMs = 120_000): Promise<PluginReply> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, path: `/${method}`, method: 'POST', timeout: timeoutMs, headers: { Accept: 'application/vnd.docker.plugins.v1.2+json' } },
      (res) => {
        let data = '';
        res.on('data', (chunk: Buffer) => (data += chunk.toString()));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(data) as PluginReply['body'] });
          } catch (err) {
            reject(new Error(`${method}: reply is not JSON: ${data}`, { cause: err }));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method}: no reply within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(text);
  });
}

/** Like callPlugin, but throws the plugin's Err. */
export async function callOk(socketPath: string, method: string, body: string | object = ''): Promise<PluginReply['body']> {
  const reply = await callPlugin(socketPath, method, body);
  if (reply.body.Err) throw new Error(`${method} failed: ${reply.body.Err}`);
  return reply.body;
}
