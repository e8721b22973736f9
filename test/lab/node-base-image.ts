import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { REPO_ROOT } from './ballast.js';
import { describeResult, runCommand } from './command.js';
import { DOCKER_BIN } from './dockerd.js';
import { type DockerHarness } from './docker-harness.js';

export interface NodeBaseImageOptions {
  /** The tag to import as (default node:20-bookworm-slim, what the Dockerfile starts FROM). */
  tag?: string;
  /** The node binary to ship as /usr/local/bin/node (default /usr/bin/node; must be >= 20). */
  node?: string;
  /** The npm package directory to ship as /usr/local/lib/node_modules/npm. */
  npmDir?: string;
  /** Parent of the temporary root (default /var/tmp). */
  parent?: string;
}

export interface NodeBaseImage {
  tag: string;
  nodeVersion: string;
  npmVersion: string;
  ms: number;
}

/**
 * A local stand-in for Docker Hub's node:20-bookworm-slim, imported into `h`'s dockerd without any
 * registry: a bookworm minbase root (scripts/debian-rootfs.sh, cached), this host's Node 20 as
 * /usr/local/bin/node and its npm as /usr/local/lib/node_modules/npm with /usr/local/bin/npm and
 * npx links, PATH and CMD as the official image has them. Like the official image it trusts only
 * Node's own CAs (see proxyCaPem). The temporary root is removed.
 */
export async function importNodeBaseImage(h: DockerHarness, options: NodeBaseImageOptions = {}): Promise<NodeBaseImage> {
  const started = Date.now();
  const tag = options.tag ?? 'node:20-bookworm-slim';
  const node = options.node ?? '/usr/bin/node';
  const npmDir = options.npmDir ?? '/usr/lib/node_modules/npm';
  const version = await runCommand([node, '-p', 'process.versions.node'], { timeoutMs: 10_000 });
  const nodeVersion = version.stdout.trim();
  if (version.code !== 0 || Number(nodeVersion.split('.')[0]) < 20) throw new Error(`${node} is not Node >= 20: ${describeResult(version)}`);
  if (!existsSync(join(npmDir, 'bin/npm-cli.js'))) throw new Error(`no npm at ${npmDir}`);
  const npmVersion = (JSON.parse(readFileSync(join(npmDir, 'package.json'), 'utf8')) as { version: string }).version;

  const root = mkdtempSync(join(options.parent ?? '/var/tmp', 'ballast-node-base-'));
  try {
    const made = await runCommand(['bash', join(REPO_ROOT, 'scripts/debian-rootfs.sh'), root], { timeoutMs: 900_000 });
    if (made.code !== 0) throw new Error(`debian-rootfs.sh failed\n${describeResult(made)}`);
    mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
    mkdirSync(join(root, 'usr/local/lib/node_modules'), { recursive: true });
    copyFileSync(node, join(root, 'usr/local/bin/node'));
    chmodSync(join(root, 'usr/local/bin/node'), 0o755);
    const copied = await runCommand(['cp', '-a', npmDir, join(root, 'usr/local/lib/node_modules/npm')], { timeoutMs: 60_000 });
    if (copied.code !== 0) throw new Error(`copying npm failed\n${describeResult(copied)}`);
    symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'));
    symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', join(root, 'usr/local/bin/npx'));
    const changes = ['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `ENV NODE_VERSION=${nodeVersion}`, 'CMD ["node"]'];
    // Streamed: no 300 MB tarball on disk.
    const imported = await runCommand(
      ['bash', '-c', 'set -euo pipefail; root=$1; shift; tar -C "$root" -c . | "$@"', 'import-base', root,
        DOCKER_BIN, 'import', ...changes.flatMap((c) => ['--change', c]), '-', tag],
      { timeoutMs: 300_000, env: h.env() },
    );
    if (imported.code !== 0) throw new Error(`docker import of ${tag} failed\n${describeResult(imported)}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return { tag, nodeVersion, npmVersion, ms: Date.now() - started };
}

/**
 * The CAs this machine trusts beyond Node's built-in roots, as one PEM text ('' if none): where
 * the way out re-signs TLS (this lab's egress, a corporate proxy), npm in a container that has
 * only Node's roots fails with SELF_SIGNED_CERT_IN_CHAIN; the Dockerfile's NPM_CONFIG_CA build
 * argument takes this. Only the extra ones: the whole bundle is too big for one argument.
 */
export function proxyCaPem(bundle = process.env.NODE_EXTRA_CA_CERTS): string {
  if (!bundle || !existsSync(bundle)) return '';
  const norm = (pem: string) => pem.replace(/\s+/g, '');
  const builtIn = new Set(rootCertificates.map(norm));
  const pems = readFileSync(bundle, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return pems.filter((pem) => !builtIn.has(norm(pem))).join('\n');
}
