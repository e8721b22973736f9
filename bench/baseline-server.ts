// The transport baseline: an HTTP server on a Unix socket that answers every POST with {},
// handling connections the way ballast's server does (Connection: close after each reply).
// Run as its own process, as ballast is: node baseline-server.js SOCKET
import { createServer } from 'node:http';
import { unlinkSync } from 'node:fs';

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: baseline-server.js SOCKET\n');
  process.exit(2);
}
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.setHeader('Connection', 'close');
    res.setHeader('Content-Type', 'application/json');
    res.end('{}');
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
