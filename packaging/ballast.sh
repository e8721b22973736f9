#!/bin/sh
# /usr/bin/ballast: runs ballast on the Node 20 shipped in this package (Debian 12's own nodejs
# is 18, too old). `ballast serve` starts its fence-watchdog child with this same node and script.
exec /usr/lib/ballast/bin/node /usr/lib/ballast/dist/cli/main.js "$@"
