// The transport baseline: an HTTP server on a Unix socket that answers every POST with a fixed
// body, handling connections the way ballast's server does (Connection: close after each reply).
// The body is {} until POST /Baseline.Reply/<Method> sets the bytes to send for /<Method> (the
// bench gives it ballast's own Get and List replies, so both send the same bytes).
// Run as its own process, as ballast is: node baseline-server.js SOCKET
import { createServer } from 'node:http';
import { unlinkSync } from 'node:fs';

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: baseline-server.js SOCKET\n');
  process.exit(2);
}
const SET = '/Baseline.Reply';
const replies = new Map<string, Buffer>();
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const url = req.url ?? '';
    if (url.startsWith(`${SET}/`)) replies.set(url.slice(SET.length), Buffer.concat(chunks));
    res.setHeader('Connection', 'close');
    res.setHeader('Content-Type', 'application/json');
    res.end(replies.get(url) ?? '{}');
  });
});
server.keepAliveTimeout = 0;
try {
  unlinkSync(socketPath);
} catch {
  // not there: fine
}
server.listen(socketPath, () => process.stdout.write('ready\n'));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
