#!/usr/bin/env bash
# usage: scripts/build-plugin.sh OUTDIR [NAME:TAG]
# Builds ballast's managed Docker plugin directory (OUTDIR/config.json + OUTDIR/rootfs) without
# any image registry: a Debian bookworm rootfs (scripts/debian-rootfs.sh, cached), this host's
# Node 20 as /usr/local/bin/node, ballast compiled from src/ and its production node_modules under
# /opt/ballast. The Dockerfile gives the same paths and entrypoint for builds with a registry.
# With NAME:TAG it then runs `docker plugin create NAME:TAG OUTDIR` (DOCKER_HOST is honoured).
#
# Environment:
#   BALLAST_PLUGIN_EXTRA_PACKAGES  more Debian packages for the rootfs, comma-separated, e.g.
#                                  open-iscsi,multipath-tools,sg3-utils (iSCSI/FC hosts; ~100 MB),
#                                  cryptsetup-bin (encrypted=true volumes)
#   BALLAST_PLUGIN_NODE            the node binary to ship (default /usr/bin/node; must be >= 20)
#   BALLAST_PLUGIN_DIST            a dist/ already compiled from this tree (default: compile src/)
set -euo pipefail
out=${1:?usage: build-plugin.sh OUTDIR [NAME:TAG]}
ref=${2:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
packages="util-linux,mount,e2fsprogs,xfsprogs${BALLAST_PLUGIN_EXTRA_PACKAGES:+,$BALLAST_PLUGIN_EXTRA_PACKAGES}"
node=${BALLAST_PLUGIN_NODE:-/usr/bin/node}

die() { echo "build-plugin: $*" >&2; exit 1; }
step() { echo "build-plugin: $* ($(( $(date +%s%N) / 1000000 - started )) ms)" >&2; }
started=$(( $(date +%s%N) / 1000000 ))

[ "$(id -u)" = 0 ] || die "run as root: the rootfs holds root-owned files (debootstrap)"
[ -x "$node" ] || die "no node binary at $node (set BALLAST_PLUGIN_NODE)"
timeout 10 "$node" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || die "$node is older than Node 20 (Debian's nodejs is 18: ship a Node 20 build)"
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then die "$out exists and is not empty"; fi

stage=$(mktemp -d /var/tmp/ballast-plugin-XXXXXX)
trap 'rm -rf "$stage"' EXIT

# 1. ballast itself, compiled into the staging dir (the checkout's dist/ is left alone).
if [ -n "${BALLAST_PLUGIN_DIST:-}" ]; then
  [ -f "$BALLAST_PLUGIN_DIST/cli/main.js" ] || die "$BALLAST_PLUGIN_DIST/cli/main.js missing"
  cp -a "$BALLAST_PLUGIN_DIST" "$stage/dist"
else
  (cd "$repo" && timeout 300 node_modules/.bin/tsc -p tsconfig.json --outDir "$stage/dist" --sourceMap false) \
    || die "tsc failed (see above)"
fi
step "compiled"

# 2. Production dependencies only, from the lock file, in a staging copy (never in the checkout).
mkdir "$stage/app"
cp "$repo/package.json" "$repo/package-lock.json" "$stage/app/"
(cd "$stage/app" && timeout 600 npm ci --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error >&2) \
  || die "npm ci --omit=dev failed in $stage/app"
step "production node_modules"

# 3. The root filesystem.
mkdir -p "$out"
rootfs="$out/rootfs"
"$repo/scripts/debian-rootfs.sh" "$rootfs" "$packages"
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
install -m755 "$node" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/opt/ballast"
cp "$stage/app/package.json" "$rootfs/opt/ballast/"
mv "$stage/dist" "$rootfs/opt/ballast/dist"
mv "$stage/app/node_modules" "$rootfs/opt/ballast/node_modules"
# Where the manifest mounts things (the Dockerfile makes the same): the plugin socket directory,
# the propagated mount, the directory binds. File binds (machine-id, docker.sock) runc creates.
mkdir -p "$rootfs/run/docker/plugins" "$rootfs/var/lib/ballast/mounts" "$rootfs/var/lib/ballast/loop" \
  "$rootfs/var/lib/ballast/state" "$rootfs/etc/ballast"
cp "$repo/config.json" "$out/config.json"
step "rootfs $(du -sm "$rootfs" | cut -f1) MB in $out"

# 4. Optionally, the plugin itself.
if [ -n "$ref" ]; then
  timeout 600 docker plugin create "$ref" "$out" >&2 || die "docker plugin create $ref failed"
  step "created plugin $ref"
fi
