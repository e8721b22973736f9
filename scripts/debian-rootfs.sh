#!/usr/bin/env bash
# usage: scripts/debian-rootfs.sh DIR [PACKAGE,PACKAGE...]   a root filesystem in DIR
#        scripts/debian-rootfs.sh --cache [PACKAGE,PACKAGE...]  only its cached tarball
# Makes a minimal Debian bookworm root filesystem without any image registry: debootstrap (variant
# minbase) from the Debian mirror this machine's apt already uses. The result is kept as a tarball
# per package set under /var/cache/ballast/rootfs, so the next build unpacks in seconds. Two
# callers asking for one package set at once build it once: the second waits for the first.
set -euo pipefail
dir=${1:?usage: debian-rootfs.sh DIR|--cache [PACKAGES]}
include=${2:-}
cache=/var/cache/ballast/rootfs
mkdir -p "$cache"
tarball="$cache/bookworm-minbase-$(printf '%s' "$include" | sha256sum | cut -c1-12).tar"

exec 8>"$tarball.lock"
flock -w 1800 8 || { echo "debian-rootfs: $tarball.lock stayed locked for 30 minutes" >&2; exit 1; }
if [ ! -s "$tarball" ]; then
  # The first http(s) mirror of Debian proper in apt's sources (deb822 or one-line format).
  mirror=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1 | tr -d ' ' || true)
  [ -n "$mirror" ] || { echo "debian-rootfs: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
  work=$(mktemp -d /var/tmp/ballast-rootfs-XXXXXX)
  trap 'rm -rf "$work"' EXIT
  timeout 900 debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$work/root" "$mirror" >"$work/log" 2>&1 || {
    tail -20 "$work/log" >&2; echo "debian-rootfs: debootstrap from $mirror failed" >&2; exit 1; }
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  tar -C "$work/root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
fi
exec 8>&-
[ "$dir" = --cache ] && exit 0
mkdir -p "$dir"
tar -C "$dir" -xf "$tarball"
