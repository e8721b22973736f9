// usage: node scripts/build-bundle.mjs   (npm run build:bundle; after npm run build)
// Bundles the compiled CLI, dist/cli/main.js, with every dependency into one file,
// dist-bundle/ballast.cjs, which behaves as `node dist/cli/main.js`. For the VM lab: there node
// resolves, reads (over 9p) and compiles each module on an emulated CPU, and the ~890 files of
// dist/ and node_modules made `ballast serve` take 2-3 times as long to start. The lazily loaded
// commands (serve, doctor, ...) stay lazy: esbuild runs the modules of a dynamic import() only
// when it is imported.
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUNDLE = join(repo, 'dist-bundle', 'ballast.cjs');

// Native addons (ssh2's sshcrypto, cpu-features) cannot be inlined: they stay in node_modules and
// the bundle requires them by their path relative to itself, so ssh2 picks the same ciphers as
// when it runs from node_modules.
const nativeAddons = {
  name: 'native-addons',
  setup(b) {
    b.onResolve({ filter: /\.node$/ }, (args) => ({
      path: relative(dirname(BUNDLE), join(args.resolveDir, args.path)), // ../node_modules/...
      external: true,
    }));
  },
};

// Written under a temp name and renamed: VM tests in other jest workers may be reading the old one.
const partial = `${BUNDLE}.${process.pid}.tmp`;
mkdirSync(dirname(BUNDLE), { recursive: true });
try {
  await build({
    entryPoints: [join(repo, 'dist', 'cli', 'main.js')],
    outfile: partial,
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
  renameSync(partial, BUNDLE);
} finally {
  rmSync(partial, { force: true });
}
