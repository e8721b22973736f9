#!/usr/bin/env bash
# usage: scripts/build-deb.sh [OUTDIR]      (default OUTDIR: build/ in the repository)
# Builds OUTDIR/ballast_<version>_<arch>.deb with dpkg-deb and prints its path on the last line.
#   /usr/lib/ballast/{dist,node_modules,package.json}  compiled here, production modules from `npm ci`
#   /usr/lib/ballast/bin/node                          this machine's Node (>= 20, see below)
#   /usr/bin/ballast                                   sh wrapper: that node + dist/cli/main.js
#   /etc/ballast/config.yml                            conffile, the loop default (packaging/config.yml)
#   /lib/systemd/system/ballast.service                packaging/ballast.service
# Node ships inside the package: Debian 12's own nodejs is 18 and ballast needs >= 20, so a
# `Depends: nodejs (>= 20)` would not install on a plain Debian 12; and the native addons npm
# builds (ssh2, cpu-features) match the ABI of exactly this node. It needs only libc6,
# libstdc++6 and libgcc-s1, which dpkg-shlibdeps turns into Depends.
# Nothing is written in the checkout but OUTDIR: the TypeScript is compiled into the staging
# tree and `npm ci --omit=dev` runs in a staging copy of package.json and package-lock.json.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
outdir=${1:-$repo/build}
node_bin=${NODE:-$(command -v node)}
tsc="$repo/node_modules/.bin/tsc"

die() { echo "build-deb: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps npm "$node_bin"; do command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"; done
[ -x "$tsc" ] || die "$tsc not found: the dev dependencies are not installed (scripts/install-deps.sh)"

upstream=$(node -p 'require(process.argv[1]).version' "$repo/package.json")
# Debian sorts "~" before the release: 1.2.0-rc.1 becomes 1.2.0~rc.1.
version=${upstream//-/\~}
arch=$(dpkg --print-architecture)
need_major=$(node -p '(require(process.argv[1]).engines.node.match(/\d+/) || ["0"])[0]' "$repo/package.json")
have=$("$node_bin" -p process.versions.node)
[ "${have%%.*}" -ge "$need_major" ] || die "$node_bin is Node $have; package.json engines wants >= $need_major"

stage=$(mktemp -d /var/tmp/ballast-deb-XXXXXX)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
lib=$root/usr/lib/ballast
umask 022
mkdir -p "$lib/bin" "$root/usr/bin" "$root/etc/ballast" "$root/lib/systemd/system" \
  "$root/usr/share/doc/ballast" "$root/DEBIAN" "$stage/npm" "$stage/debian" "$outdir"

echo "build-deb: compiling TypeScript" >&2
timeout 300 "$tsc" -p "$repo/tsconfig.json" --outDir "$lib/dist" --sourceMap false

echo "build-deb: npm ci --omit=dev in a staging copy" >&2
cp "$repo/package.json" "$repo/package-lock.json" "$stage/npm/"
(cd "$stage/npm" && timeout 600 npm ci --omit=dev --prefer-offline --no-audit --no-fund --loglevel=error >&2)
mv "$stage/npm/node_modules" "$lib/node_modules"
# Compiler intermediates of the native addons; the built .node files stay.
find "$lib/node_modules" -depth -type d \( -name obj.target -o -name .deps \) -path '*/build/*' -exec rm -rf {} +
cp "$repo/package.json" "$lib/package.json" # "type": "module": dist/ is ESM

install -m 755 "$node_bin" "$lib/bin/node"
install -m 755 "$repo/packaging/ballast.sh" "$root/usr/bin/ballast"
install -m 644 "$repo/packaging/config.yml" "$root/etc/ballast/config.yml"
install -m 644 "$repo/packaging/ballast.service" "$root/lib/systemd/system/ballast.service"
install -m 644 "$repo/README.md" "$repo/packaging/copyright" "$root/usr/share/doc/ballast/"
for script in postinst prerm postrm; do install -m 755 "$repo/packaging/$script" "$root/DEBIAN/$script"; done
echo /etc/ballast/config.yml >"$root/DEBIAN/conffiles"

# dpkg-shlibdeps reads the libraries' symbols files; it wants a debian/control beside it.
printf 'Source: ballast\n\nPackage: ballast\nArchitecture: any\n' >"$stage/debian/control"
mapfile -t elves < <(cd "$stage" && { echo "root/usr/lib/ballast/bin/node"; find root/usr/lib/ballast/node_modules -name '*.node' -type f; })
shlibs=$(cd "$stage" && dpkg-shlibdeps -O -xballast "${elves[@]/#/-e}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies for $node_bin"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
maintainer=${DEB_MAINTAINER:-ballast maintainers <ballast@localhost>}
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
  -e "s/@SHLIBS_DEPENDS@/$shlibs/" -e "s/@MAINTAINER@/$maintainer/" \
  "$repo/packaging/control.in" >"$root/DEBIAN/control"

deb="$outdir/ballast_${version}_${arch}.deb"
echo "build-deb: dpkg-deb --build ($installed_size KiB unpacked)" >&2
timeout 600 dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
