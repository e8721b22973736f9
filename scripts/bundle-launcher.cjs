#!/usr/bin/env node
'use strict';
// dist-bundle/ballast.cjs, written by scripts/build-bundle.mjs from this file: runs the bundled
// CLI (FILES.bundle, beside this file) with V8's code cache of it (FILES.cache), made by the
// build after a real `ballast serve` started. With the cache node skips parsing and compiling
// the 4 MB bundle and the functions a daemon start runs: in a VM of the lab (emulated CPU)
// `ballast serve` started in ~3.2 s instead of ~6 s. A cache V8 rejects (another node) is
// ignored. BALLAST_BUNDLE_WRITE_CACHE=<file> writes the cache at exit (the build does).
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const Module = require('node:module');
const vm = require('node:vm');

const FILES = { bundle: 'ballast-bundle.cjs', cache: 'ballast-bundle.v8cache' }; // replaced by the build

const file = join(__dirname, FILES.bundle);
let cachedData;
try {
  cachedData = readFileSync(join(__dirname, FILES.cache));
} catch {
  // no cache: compile as node would
}
// As node's CommonJS loader runs a file: wrapped in a function, its #! line made a comment.
const source = Module.wrap(readFileSync(file, 'utf8').replace(/^#!/, '//'));
const script = new vm.Script(source, { filename: file, cachedData });
const cacheOut = process.env.BALLAST_BUNDLE_WRITE_CACHE;
if (cacheOut) process.once('exit', () => writeFileSync(cacheOut, script.createCachedData()));
const bundle = new Module(file, module);
bundle.filename = file;
bundle.paths = Module._nodeModulePaths(__dirname);
script.runInThisContext()(bundle.exports, Module.createRequire(file), bundle, file, __dirname);
