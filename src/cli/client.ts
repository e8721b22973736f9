import axios from 'axios';

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
