import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../lab/ballast.js';
import { describeResult, runCommand, startCommand, type Background } from '../lab/command.js';
import { DOCKER_BIN } from '../lab/dockerd.js';
import { DockerHarness } from '../lab/docker-harness.js';
import { withDiagnostics } from '../lab/docker-suite.js';
import { importNodeBaseImage, proxyCaPem, type NodeBaseImage } from '../lab/node-base-image.js';
import { requireRootAndTools } from '../helpers/root.js';

// The Dockerfile, built for real, gives the same /opt/ballast as scripts/build-plugin.sh. No
// registry is reachable here, so node:20-bookworm-slim is a local stand-in (a debootstrap root
// with this host's Node 20 and npm, test/lab/node-base-image.ts) imported into a private
// dockerd; `docker build --network host` then reaches Debian's mirror (apt) and the npm registry
// (npm ci) as a user's build would. The image's filesystem is exported and compared with the
// rootfs build-plugin.sh makes from the same checkout.
requireRootAndTools('dockerd', 'docker', 'debootstrap', 'tar', 'chroot', 'npm', 'bash');

const T = 180_000;
const TAG = 'ballast-rootfs:test';
/** What the daemon runs for the loop backend: both trees must carry them. */
const TOOLS: [string, string][] = [['losetup', '--version'], ['mkfs.ext4', '-V'], ['mkfs.xfs', '-V'], ['blkid', '-V'], ['mount', '--version']];
/** What runs inside a root sees only this, not the test runner's environment. */
const CLEAN_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: '/root' };

let h: DockerHarness | undefined;
let work = '';
let pluginBuild: Background | undefined;
let base: NodeBaseImage | undefined;
let container = '';
const timings: Record<string, number | string> = {};
/** The rootfs build-plugin.sh made, and the image's exported filesystem. */
const pluginRoot = () => join(work, 'plugin', 'rootfs');
const imageRoot = () => join(work, 'image');

const it = (name: string, body: () => Promise<void>, timeout = T) => test(name, withDiagnostics(() => h, body), timeout);

/** Every file, symlink and empty directory under `dir`, as paths relative to it, sorted. */
function treeOf(dir: string, rel = ''): string[] {
  const out: string[] = [];
  const entries = readdirSync(join(dir, rel), { withFileTypes: true });
  if (rel && entries.length === 0) out.push(`${rel}/`);
  for (const e of entries) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...treeOf(dir, path));
    else out.push(path);
  }
  return out.sort();
}

/** Every installed package under a node_modules dir, nested ones included: "PATH NAME@VERSION". */
function packagesOf(nodeModules: string, rel = ''): string[] {
  const out: string[] = [];
  const dir = join(nodeModules, rel);
  if (!existsSync(dir)) return out;
  const packageDirs: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue; // .bin, .package-lock.json
    if (e.name.startsWith('@')) {
      for (const s of readdirSync(join(dir, e.name), { withFileTypes: true })) if (s.isDirectory()) packageDirs.push(`${rel}${e.name}/${s.name}`);
    } else packageDirs.push(`${rel}${e.name}`);
  }
  for (const p of packageDirs) {
    const manifest = JSON.parse(readFileSync(join(nodeModules, p, 'package.json'), 'utf8')) as { name: string; version: string };
    out.push(`${p} ${manifest.name}@${manifest.version}`);
    out.push(...packagesOf(nodeModules, `${p}/node_modules/`));
  }
  return out.sort();
}

/** The entries of `a` missing from `b` and the reverse, for one readable expectation. */
function difference(image: string[], plugin: string[]): { onlyInImage: string[]; onlyInPlugin: string[] } {
  const inPlugin = new Set(plugin);
  const inImage = new Set(image);
  return { onlyInImage: image.filter((x) => !inPlugin.has(x)), onlyInPlugin: plugin.filter((x) => !inImage.has(x)) };
}

/** Where each tool resolves on PATH inside `root`, after checking it runs there. */
async function toolsIn(root: string): Promise<Record<string, string>> {
  const found: Record<string, string> = {};
  for (const [tool, versionFlag] of TOOLS) {
    const where = await runCommand(['chroot', root, '/bin/sh', '-c', `command -v ${tool}`], { timeoutMs: 20_000, env: CLEAN_ENV });
    found[tool] = where.code === 0 ? where.stdout.trim() : 'MISSING';
    const ran = await runCommand(['chroot', root, tool, versionFlag], { timeoutMs: 20_000, env: CLEAN_ENV });
    if (ran.code !== 0) found[tool] += ` (does not run: ${describeResult(ran)})`;
  }
  return found;
}

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/ballast-dockerfile-');
  // build-plugin.sh (compile, npm ci, rootfs) runs while the engine starts and the stand-in
  // base image is made; both finish before `docker build` starts to keep the 2 cores for it.
  pluginBuild = startCommand(['bash', join(REPO_ROOT, 'scripts/build-plugin.sh'), join(work, 'plugin')], { timeoutMs: 600_000 });
  h = await DockerHarness.start({ name: 'dockerfile', dir: join(work, 'dockerd'), startBallast: false });
  base = await importNodeBaseImage(h, { parent: work });
  timings['base image (rootfs, node, npm, import)'] = base.ms;
  timings['base node/npm'] = `${base.nodeVersion}/${base.npmVersion}`;
  const built = await pluginBuild.done;
  if (built.code !== 0) throw new Error(`build-plugin.sh failed\n${describeResult(built)}`);
  timings['build-plugin.sh'] = built.ms;
  timings['build-plugin.sh steps'] = built.stderr.split('\n').filter((l) => l.startsWith('build-plugin: ')).map((l) => l.slice(14)).join('; ');
}, 900_000);

afterAll(async () => {
  const problems: string[] = [];
  // build-plugin.sh bounds each of its steps; waiting lets its own trap remove its staging dir.
  if (pluginBuild?.running()) await pluginBuild.done;
  if (h?.dockerd && h.dockerd.exitCode === null) {
    if (container) {
      const r = await h.docker(['rm', '-f', container]);
      if (r.code !== 0) problems.push(`docker rm ${container}: ${r.stderr.trim()}`);
    }
    for (const image of [TAG, base?.tag ?? 'node:20-bookworm-slim']) await h.docker(['rmi', '-f', image]);
    await h.docker(['image', 'prune', '-f']); // the build stage's untagged image
    const left = (await h.docker(['images', '-q', '--filter', 'reference=ballast-rootfs'])).stdout.trim();
    if (left) problems.push(`images left: ${left}`);
  }
  if (h) {
    const report = await h.teardown();
    problems.push(...report.errors, ...report.hostMounts.map((m) => `host mount ${m}`), ...report.strayPids.map((p) => `stray pid ${p}`));
  }
  if (work && !process.env.BALLAST_TEST_KEEP) rmSync(work, { recursive: true, force: true });
  process.stderr.write(`plugin Dockerfile timings (ms unless said): ${JSON.stringify(timings)}\n`);
  if (problems.length) throw new Error(`cleanup had to deal with:\n  ${problems.join('\n  ')}`);
}, T);

describe('the Dockerfile gives the same plugin rootfs as scripts/build-plugin.sh', () => {
  it('docker build --network host succeeds from a local node:20-bookworm-slim (npm ci, tsc, prune, apt)', async () => {
    const hh = h!;
    // This lab's way out re-signs TLS: without its CA, npm ci fails (SELF_SIGNED_CERT_IN_CHAIN)
    // as in any official node image behind such a proxy. The Dockerfile's build argument for it:
    const ca = proxyCaPem();
    timings['NPM_CONFIG_CA (bytes)'] = ca.length;
    // The client here has no buildx: the classic builder, named so it does not depend on defaults.
    const args = ['build', '--network', 'host', '--force-rm', ...(ca ? ['--build-arg', `NPM_CONFIG_CA=${ca}`] : []), '-t', TAG, REPO_ROOT];
    const built = await hh.docker(args, {
      timeoutMs: 600_000,
      env: { DOCKER_BUILDKIT: '0' },
    });
    timings['docker build'] = built.ms;
    if (built.code !== 0) throw new Error(`docker build failed\n${describeResult({ ...built, argv: built.argv.map((a) => a.replace(/-----BEGIN[\s\S]*/, '(CA PEM)')) })}`);
    // The CA given for the build stage is nowhere in the final image's history.
    expect(await hh.ok(['history', '--no-trunc', TAG])).not.toContain('BEGIN CERTIFICATE');
    // Nothing was pulled: the FROM lines used the imported stand-in.
    expect(built.stdout).not.toMatch(/Pulling from/);
    expect(built.stdout).toMatch(/Successfully tagged ballast-rootfs:test/);

    container = (await hh.ok(['create', TAG])).trim();
    const exported = await runCommand(
      ['bash', '-c', 'set -euo pipefail; mkdir -p "$3"; "$1" export "$2" | tar -C "$3" -x', 'export', DOCKER_BIN, container, imageRoot()],
      { timeoutMs: 300_000, env: hh.env() },
    );
    timings['docker export + tar -x'] = exported.ms;
    if (exported.code !== 0) throw new Error(`docker export failed\n${describeResult(exported)}`);
    const size = await runCommand(['du', '-sm', imageRoot(), pluginRoot()], { timeoutMs: 60_000 });
    timings['sizes (MB): image, build-plugin.sh'] = size.stdout.trim().split('\n').map((l) => l.split('\t')[0]).join(', ');
  }, 660_000);

  it('/opt/ballast: the same top-level entries and the same compiled files under dist/', async () => {
    const image = join(imageRoot(), 'opt/ballast');
    const plugin = join(pluginRoot(), 'opt/ballast');
    expect(readdirSync(image).sort()).toEqual(readdirSync(plugin).sort());
    const imageDist = treeOf(join(image, 'dist'));
    const pluginDist = treeOf(join(plugin, 'dist'));
    expect(pluginDist).toContain('cli/main.js');
    expect(pluginDist.length).toBeGreaterThan(50);
    expect(difference(imageDist, pluginDist)).toEqual({ onlyInImage: [], onlyInPlugin: [] });
    expect(imageDist.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(readFileSync(join(image, 'package.json'), 'utf8')).toBe(readFileSync(plugin + '/package.json', 'utf8'));
  });

  it('/opt/ballast/node_modules: the same packages (path, name@version), production only', async () => {
    const image = packagesOf(join(imageRoot(), 'opt/ballast/node_modules'));
    const plugin = packagesOf(join(pluginRoot(), 'opt/ballast/node_modules'));
    expect(plugin.length).toBeGreaterThan(50);
    timings['packages'] = plugin.length;
    expect(difference(image, plugin)).toEqual({ onlyInImage: [], onlyInPlugin: [] });
    // File by file too (paths): npm prune, unlike npm ci --omit=dev, leaves emptied @scope dirs.
    const imageTree = treeOf(join(imageRoot(), 'opt/ballast/node_modules'));
    const pluginTree = treeOf(join(pluginRoot(), 'opt/ballast/node_modules'));
    expect(difference(imageTree, pluginTree)).toEqual({ onlyInImage: [], onlyInPlugin: [] });
    timings['node_modules files'] = pluginTree.length;
    const names = image.map((p) => p.split(' ')[0]);
    const deps = Object.keys((JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);
    expect(names).toEqual(expect.arrayContaining(deps));
    for (const dev of ['typescript', 'jest', 'ts-jest', 'fast-check', 'supertest', '@types/jest']) expect(names).not.toContain(dev);
  });

  it('the entrypoint and workdir of config.json, every bind target, and the tools the daemon runs, in both trees', async () => {
    const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'config.json'), 'utf8')) as {
      entrypoint: string[];
      workdir: string;
      propagatedMount: string;
      mounts: { destination: string; options: string[] }[];
    };
    const [config] = JSON.parse(await h!.ok(['image', 'inspect', TAG])).map((i: { Config: Record<string, unknown> }) => i.Config);
    expect(config.Entrypoint).toEqual(manifest.entrypoint);
    expect(config.WorkingDir).toBe(manifest.workdir);
    const dirs = [manifest.propagatedMount, ...manifest.mounts.filter((m) => m.options.includes('rbind')).map((m) => m.destination)];
    for (const root of [imageRoot(), pluginRoot()]) {
      for (const path of manifest.entrypoint.filter((a) => a.startsWith('/'))) expect(lstatSync(join(root, path)).isFile()).toBe(true);
      for (const dir of dirs) expect([root, dir, existsSync(join(root, dir))]).toEqual([root, dir, true]);
    }
    const imageTools = await toolsIn(imageRoot());
    const pluginTools = await toolsIn(pluginRoot());
    expect(Object.values(pluginTools).every((p) => p.startsWith('/') && !p.includes(' '))).toBe(true);
    expect(imageTools).toEqual(pluginTools);
  });

  it('the same Debian packages, and no apt caches, .debs, docs, man pages or locales in the image', async () => {
    const installed = (root: string) =>
      readFileSync(join(root, 'var/lib/dpkg/status'), 'utf8')
        .split('\n\n')
        .filter((stanza) => /^Status: install ok installed$/m.test(stanza))
        .map((stanza) => /^Package: (\S+)$/m.exec(stanza)?.[1] ?? '?')
        .sort();
    const pluginPackages = installed(pluginRoot());
    expect(pluginPackages).toEqual(expect.arrayContaining(['util-linux', 'mount', 'e2fsprogs', 'xfsprogs']));
    expect(difference(installed(imageRoot()), pluginPackages)).toEqual({ onlyInImage: [], onlyInPlugin: [] });
    const cached = treeOf(join(imageRoot(), 'var/cache/apt')).filter((f) => f.endsWith('.deb') || f.endsWith('.bin'));
    expect(cached).toEqual([]);
    for (const dir of ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale']) {
      expect([dir, readdirSync(join(imageRoot(), dir))]).toEqual([dir, readdirSync(join(pluginRoot(), dir))]);
    }
  });

  it('the image runs its own /opt/ballast: config check, and every module serve loads', async () => {
    const hh = h!;
    const node = ['run', '--rm', '--network', 'none', '--entrypoint', '/usr/local/bin/node', TAG];
    const check = JSON.parse(await hh.ok([...node, '/opt/ballast/dist/cli/main.js', 'config', 'check'])) as Record<string, unknown>;
    expect(check).toHaveProperty('backends');
    const loaded = await hh.ok([...node, '--input-type=module', '-e', "await import('/opt/ballast/dist/cli/serve.js'); console.log('loaded')"]);
    expect(loaded.trim()).toBe('loaded');
  });
});
