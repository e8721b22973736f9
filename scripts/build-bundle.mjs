// usage: node scripts/build-bundle.mjs   (npm run build:bundle; after npm run build)
// Bundles the compiled CLI, dist/cli/main.js, with every dependency into one file for the VM lab,
// where node resolves, reads (over 9p) and compiles each module on an emulated CPU: the ~890 files
// of dist/ and node_modules made `ballast serve` take 2-3 times as long to start. The lazily
// loaded commands (serve, doctor, ...) stay lazy: esbuild runs the modules of a dynamic import()
// only when it is imported. Writes, in dist-bundle/:
//   ballast-<hash>.cjs      the bundle
//   ballast-<hash>.v8cache  V8's code cache of it, taken at the exit of a `ballast serve` started
//                           here on a loop backend in a temp dir and asked one request
//   ballast.cjs             scripts/bundle-launcher.cjs naming those two: behaves as
//                           `node dist/cli/main.js`
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(repo, 'dist-bundle');
const LAUNCHER = join(OUT, 'ballast.cjs');

// Native addons (ssh2's sshcrypto, cpu-features) cannot be inlined: they stay in node_modules and
// the bundle requires them by their path relative to itself, so ssh2 picks the same ciphers as
// when it runs from node_modules.
const nativeAddons = {
  name: 'native-addons',
  setup(b) {
    b.onResolve({ filter: /\.node$/ }, (args) => ({
      path: relative(OUT, join(args.resolveDir, args.path)), // ../node_modules/...
      external: true,
    }));
  },
};

// Everything is written under temp names and renamed, the launcher last: VM tests in other jest
// workers may be running the old one. Its bundle and cache keep their names (the hash of the
// bundle): V8 checks a cache against the length of the source only.
// (.cjs: in this package a .js or unknown extension would be read as an ES module)
const tmp = (name) => join(OUT, `${name}.${process.pid}.tmp.cjs`);
mkdirSync(OUT, { recursive: true });
try {
  await build({
    entryPoints: [join(repo, 'dist', 'cli', 'main.js')],
    outfile: tmp('bundle'),
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // Without comments (some of them not ASCII, which made node read the whole source as a
    // two-byte string) node compiled it with 10% less CPU; names stay, so stack traces still read.
    minifyWhitespace: true,
    plugins: [nativeAddons],
    logLevel: 'warning',
  });
  const hash = createHash('sha256').update(readFileSync(tmp('bundle'))).digest('hex').slice(0, 16);
  const files = { bundle: `ballast-${hash}.cjs`, cache: `ballast-${hash}.v8cache` };
  renameSync(tmp('bundle'), join(OUT, files.bundle));
  const launcher = readFileSync(join(repo, 'scripts', 'bundle-launcher.cjs'), 'utf8');
  const marker = /^const FILES = .*$/m;
  if (!marker.test(launcher)) throw new Error('scripts/bundle-launcher.cjs lost its FILES line');
  writeFileSync(tmp('launcher'), launcher.replace(marker, `const FILES = ${JSON.stringify(files)};`), { mode: 0o755 });
  try {
    await warmUp(tmp('launcher'), tmp('cache'));
    renameSync(tmp('cache'), join(OUT, files.cache));
  } catch (err) {
    console.warn(`build-bundle: no code cache (the bundle works without, only starts slower): ${err.message}`);
  }
  renameSync(tmp('launcher'), LAUNCHER);
  removeOlderBuilds(files);
} finally {
  for (const name of ['bundle', 'launcher', 'cache']) rmSync(tmp(name), { force: true });
}

/** Starts `serve` through the launcher, sends it one request, stops it: it writes the cache at exit. */
async function warmUp(launcher, cacheOut) {
  const dir = mkdtempSync(join(tmpdir(), 'ballast-bundle-cache-'));
  const socket = join(dir, 'ballast.sock');
  const config = join(dir, 'config.yml');
  writeFileSync(config, [
    'host: {id: bundle-build}',
    `socket: ${socket}`,
    `state_dir: ${join(dir, 'state')}`,
    `mount_root: ${join(dir, 'mounts')}`,
    `docker: {socket: ${join(dir, 'no-docker.sock')}, restart_wait_seconds: 1}`,
    `backends: {loop: {root: ${join(dir, 'loop')}}}`,
    'profiles: {default: {backend: loop}}',
    '',
  ].join('\n'));
  const child = spawn(process.execPath, [launcher, '--config', config, 'serve'], {
    // Not jest's NODE_OPTIONS: V8 rejects a cache made under other flags.
    env: { ...process.env, NODE_OPTIONS: '', BALLAST_BUNDLE_WRITE_CACHE: cacheOut },
    stdio: 'ignore',
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    const deadline = Date.now() + 60_000;
    while (!existsSync(socket)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`ballast serve did not start (exit ${child.exitCode})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((resolve, reject) => {
      const req = request({ socketPath: socket, method: 'POST', path: '/VolumeDriver.List', timeout: 10_000 }, (res) => res.resume().on('end', resolve));
      req.on('error', reject).on('timeout', () => req.destroy(new Error('no reply to VolumeDriver.List')));
      req.end('{}');
    });
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    if (!existsSync(cacheOut)) throw new Error('ballast serve exited without writing the cache');
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Bundles and caches of earlier builds, once no launcher can still be starting them. */
function removeOlderBuilds(keep) {
  for (const name of readdirSync(OUT)) {
    if (!/^ballast-[0-9a-f]{16}\.(cjs|v8cache)$/.test(name) || name === keep.bundle || name === keep.cache) continue;
    const path = join(OUT, name);
    if (Date.now() - statSync(path).mtimeMs > 10 * 60_000) rmSync(path, { force: true });
  }
}
