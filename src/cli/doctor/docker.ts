import { basename, dirname, posix } from 'node:path';
import { errorMessage } from '../../errors.js';
import { info, ok, problem, type DoctorContext, type Finding } from './types.js';

// Where dockerd looks for legacy (v1) plugins: sockets in the first, spec files naming a socket
// in the others (moby pkg/plugins/discovery_unix.go).
const SOCKET_DIRS = ['/run/docker/plugins', '/var/run/docker/plugins'];
const SPEC_DIRS = ['/etc/docker/plugins', '/usr/lib/docker/plugins'];

/** The name dockerd knows the plugin by, or undefined when it cannot discover the socket. */
export async function pluginName({ probe, config }: DoctorContext): Promise<string | undefined> {
  const socket = posix.normalize(config.socket);
  if (SOCKET_DIRS.includes(dirname(socket)) && socket.endsWith('.sock')) return basename(socket, '.sock');
  for (const dir of SPEC_DIRS) {
    for (const entry of await probe.list(dir)) {
      if (!entry.endsWith('.spec')) continue;
      const target = (await probe.readText(`${dir}/${entry}`))?.trim().replace(/^unix:\/\//, '');
      if (target && posix.normalize(target) === socket) return basename(entry, '.spec');
    }
  }
  return undefined;
}

function reason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ECONNREFUSED' ? 'not-running' : code === 'ETIMEDOUT' ? 'timeout' : errorMessage(err);
}

/** Whether dockerd can find the plugin, answers, and reaches ballast through it. */
export async function checkDocker(context: DoctorContext): Promise<Finding[]> {
  const { probe, config, timeoutMs } = context;
  const findings: Finding[] = [];
  const name = await pluginName(context);
  if (!name) {
    findings.push(problem('docker', `dockerd cannot discover the plugin: ${config.socket} is outside /run/docker/plugins and no spec file names it: run \`echo unix://${config.socket} > /etc/docker/plugins/ballast.spec\` (or set socket to /run/docker/plugins/ballast.sock)`));
  }
  const dockerd = config.docker.socket;
  try {
    const ping = await probe.httpGet(dockerd, '/_ping', timeoutMs);
    if (ping.status !== 200) return [...findings, problem('docker', `dockerd at ${dockerd} answered /_ping with HTTP ${ping.status}: check dockerd's log (journalctl -u docker)`)];
  } catch (err) {
    const why = reason(err);
    if (why === 'not-running') return [...findings, info('docker', `dockerd is not running (nothing answers on ${dockerd}, the setting docker.socket): not checked whether it sees the plugin; start dockerd before using volumes`)];
    return [...findings, problem('docker', `dockerd at ${dockerd} ${why === 'timeout' ? `did not answer within ${timeoutMs / 1000} s` : `cannot be asked: ${why}`}: check dockerd (systemctl status docker)`)];
  }
  findings.push(ok('docker', `dockerd answers on ${dockerd}`));
  if (!name) return findings;
  if (!(await probe.socketAnswers(config.socket, timeoutMs))) {
    return [...findings, info('docker', `ballast is not serving on ${config.socket} yet: run \`ballast serve\`; not checked whether dockerd reaches it`)];
  }
  // Listing the driver's volumes makes dockerd find, activate and call the plugin.
  const filters = encodeURIComponent(JSON.stringify({ driver: [name] }));
  try {
    const reply = await probe.httpGet(dockerd, `/volumes?filters=${filters}`, timeoutMs);
    if (reply.status === 200) return [...findings, ok('docker', `dockerd reaches the plugin as volume driver "${name}"`)];
    const message = (() => {
      try {
        return String((JSON.parse(reply.body) as { message?: string }).message ?? reply.body);
      } catch {
        return reply.body;
      }
    })();
    return [...findings, problem('docker', `dockerd does not reach the plugin "${name}" (HTTP ${reply.status}: ${message.trim().slice(0, 200)}): check that dockerd runs on this host's /run (not in another mount namespace) and ballast's log`)];
  } catch (err) {
    return [...findings, problem('docker', `dockerd did not list the plugin's volumes within ${timeoutMs / 1000} s (${reason(err)}): check ballast's log`)];
  }
}
