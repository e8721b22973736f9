#!/usr/bin/env bash
# Installs every Debian and npm package ballast needs, idempotently, then builds it.
# Safe to run again: apt-get and npm ci only do work when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# usage: install-deps.sh            everything: the daemon, every transport and the whole test lab
#        install-deps.sh --runtime [PACKAGE...]
#                                   only what the daemon needs on its embedded default (the loop
#                                   backend), plus the Debian packages given (scripts/start.sh passes
#                                   those the configured backends need: `ballast config packages`)
#        install-deps.sh --packages PACKAGE...
#                                   only those Debian packages (no npm, no build)
# Keep RUNTIME_PACKAGES equal to BASE_PACKAGES in src/config/host-packages.ts.
RUNTIME_PACKAGES=(util-linux mount e2fsprogs xfsprogs cryptsetup-bin)

# The lab, beyond the runtime: every transport's initiator tools (open-iscsi, multipath-tools,
# sg3-utils, nvme-cli); tgt and lvm2 for an iSCSI array on a Linux host. A real Docker engine,
# compose, a busybox image source; multi-host tests: sqlite3 (copied into a test image) and iptables
# (a FORWARD rule for their bridge); iSCSI tests: libiscsi-bin (checks the array from outside), jq
# (the VM scenarios read JSON replies), qemu and Debian's kernel for the VM lab, curl inside it,
# openssh-server (an array host reached over SSH, as the VMs reach the host); vSphere tests: Go and
# govmomi's sources, from which test/vcsim/ builds vcsim (the vCenter simulator); NFS: ganesha.
# Install paths: debootstrap (the managed plugin's rootfs and the .deb's test chroot),
# docker-registry (plugin push/install), dpkg-dev; metrics: prometheus.
LAB_PACKAGES=(docker.io docker-compose busybox-static iproute2 procps sqlite3 iptables
  open-iscsi multipath-tools sg3-utils tgt lvm2 libiscsi-bin qemu-system-x86 linux-image-amd64 curl jq openssh-server nvme-cli
  golang-go golang-github-vmware-govmomi-dev nfs-ganesha nfs-ganesha-vfs nfs-common
  debootstrap docker-registry dpkg-dev prometheus systemd
  # Cinder tests (test/lab/cinder.ts): a real OpenStack Cinder (Zed) on loopback, its API,
  # scheduler and volume service, and RabbitMQ for their RPC; its volumes are exported by tgt (above).
  cinder-api cinder-scheduler cinder-volume rabbitmq-server)

mode=${1:-lab}
if [ "$mode" = --runtime ]; then
  shift
  DEBIAN_PACKAGES=("${RUNTIME_PACKAGES[@]}" "$@")
elif [ "$mode" = --packages ]; then
  shift
  DEBIAN_PACKAGES=("$@")
else
  DEBIAN_PACKAGES=("${RUNTIME_PACKAGES[@]}" "${LAB_PACKAGES[@]}")
fi

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done

npm_and_build() {
  # `npm ci` installs exactly the committed lock file, and fails when package.json and the lock
  # disagree. When node_modules is already current, a dry run still checks that the two agree, so
  # a lock that `npm ci` (and the Dockerfile) would refuse fails here too, in CI.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    npm ci --dry-run --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
  fi
  npm run --silent build
}
# npm ci and the build need nothing from apt (Node, python3, make and g++ come with the machine):
# with packages to install, they run meanwhile. On a fresh machine the apt install took 5.5
# minutes, mostly downloads and dpkg, before npm ci's own downloads and tsc's CPU even started.
npm_pid=
if [ "$mode" != --packages ] && [ "${#missing[@]}" -gt 0 ]; then
  npm_and_build &
  npm_pid=$!
fi

# The package tests' root filesystems (scripts/debian-rootfs.sh: debootstrap, cached per package
# set): the node base image's (none), build-plugin.sh's, and deb-package.test.ts's chroot's. Uncached,
# they took the package tests 3-4 minutes, beside the VM suites; built here, they take the CPU apt
# leaves idle. In the background, one at a time; a test that needs one still being built waits for
# it (the script's lock), and a set not listed here (or changed there) is only built by its test.
warmed=
warm_rootfs() {
  local log=/var/tmp/ballast-rootfs-warm.log
  warmed=yes
  echo "install-deps: building the tests' Debian root filesystems in the background (log: $log)"
  ( for packages in '' util-linux,mount,e2fsprogs,xfsprogs util-linux,mount,e2fsprogs,xfsprogs,systemd; do
      bash scripts/debian-rootfs.sh --cache "$packages"
    done ) >"$log" 2>&1 &
}

apt_install() {
  # Without an fsync per unpacked file: a fresh machine installs some 600 packages, and an install
  # cut short is simply run again.
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-unsafe-io "$@" >/dev/null
}
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages like tgt, openssh-server and open-iscsi would start their daemons on install; the
  # tests start private ones. Without a policy already in place, refuse service starts meanwhile.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  # The kernel (the VM lab's) last and alone. Installed with the rest, its initramfs was made twice
  # (about 70 s each here): by the kernel's own hook, then again when the packages with initramfs
  # hooks (lvm2, open-iscsi, multipath-tools, busybox) fired initramfs-tools' trigger at the end.
  # Installed before the kernel, that trigger finds no initramfs to update.
  kernel=()
  rest=()
  for pkg in "${missing[@]}"; do
    if [ "$pkg" = linux-image-amd64 ]; then kernel=("$pkg"); else rest+=("$pkg"); fi
  done
  [ "${#kernel[@]}" -eq 0 ] || rest+=(initramfs-tools linux-base kmod)
  if [ "$mode" = lab ] && [[ " ${rest[*]} " == *" debootstrap "* ]]; then
    apt_install debootstrap
    warm_rootfs
  fi
  apt_install "${rest[@]}"
  [ "${#kernel[@]}" -eq 0 ] || apt_install "${kernel[@]}"
fi

[ "$mode" = --packages ] && exit 0
# debootstrap already there: the caches all the same (a set already cached takes no time).
if [ "$mode" = lab ] && [ -z "$warmed" ]; then warm_rootfs; fi

if [ -n "$npm_pid" ]; then
  wait "$npm_pid" || { echo "install-deps: npm ci or the build failed (see above)" >&2; exit 1; }
else
  npm_and_build
fi
# The VM lab runs the CLI bundled into one file (test/lab/vm-scenario.ts also builds it when stale).
[ "$mode" = --runtime ] || npm run --silent build:bundle
