#!/usr/bin/env bash
# Command 1: install what ballast needs, then run the daemon in the foreground.
# With no /etc/ballast/config.yml it runs on the embedded default: the loop backend
# under /var/lib/ballast, serving /run/docker/plugins/ballast.sock.
#   scripts/start.sh [--all-transports] [BALLAST OPTIONS]
# Only the runtime is installed (util-linux, mount, e2fsprogs, xfsprogs, cryptsetup-bin, the npm packages), plus
# the initiator tools of the transports the configuration uses (`ballast config packages`);
# --all-transports installs those of every transport (iSCSI, multipath, reservations, NVMe/TCP).
# Other arguments go to `ballast`, e.g. `scripts/start.sh --config /etc/ballast/other.yml`.
set -euo pipefail
cd "$(dirname "$0")/.."
packages_of=(config packages)
if [ "${1:-}" = --all-transports ]; then
  packages_of=(config packages --all)
  shift
fi
bash scripts/install-deps.sh --runtime >&2
mapfile -t needed < <(node dist/cli/main.js "$@" "${packages_of[@]}")
bash scripts/install-deps.sh --packages "${needed[@]}" >&2
# A sysfs write stuck in the kernel (a scan of a hung target) keeps one of libuv's threads until
# it returns; ballast stops waiting for it, and more threads keep the daemon's file I/O going.
export UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-16}
exec node dist/cli/main.js "$@" serve
