#!/usr/bin/env bash
# Command 1: install what ballast needs, then run the daemon in the foreground.
# With no /etc/ballast/config.yml it runs on the embedded default: the loop backend
# under /var/lib/ballast, serving /run/docker/plugins/ballast.sock.
# Extra arguments go to `ballast`, e.g. `scripts/start.sh --config /etc/ballast/other.yml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >&2
exec node dist/cli/main.js "$@" serve
