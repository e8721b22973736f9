# The rootfs of ballast's managed plugin, for builders with an image registry. Offline, without
# any registry, scripts/build-plugin.sh makes the same tree (same paths, same entrypoint).
# See README.md, "Managed plugin".
# Build stage: compile TypeScript, then keep only production dependencies (no install scripts,
# as build-plugin.sh: ssh2's optional native speed-ups are not built).
FROM node:20-bookworm-slim AS build
WORKDIR /opt/ballast
COPY package.json package-lock.json tsconfig.json ./
# Behind a proxy that re-signs TLS, npm needs that proxy's CA (PEM text, not a path):
# --build-arg NPM_CONFIG_CA="$(cat proxy-ca.pem)". Build stage only: not in the final image.
ARG NPM_CONFIG_CA
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
# prune leaves the @scope directories it emptied: they go too (build-plugin.sh never has them).
RUN npx tsc -p tsconfig.json --sourceMap false && npm prune --omit=dev --ignore-scripts \
 && find node_modules -mindepth 1 -maxdepth 1 -type d -empty -delete

# Runtime: node at /usr/local/bin/node plus the host-side tools the attachers run (losetup,
# blkid, mkfs, fsck, mount). iSCSI/FC hosts add open-iscsi multipath-tools sg3-utils here.
# No .debs, apt caches, docs, man pages or locales, as build-plugin.sh: the exported tree is the
# plugin's rootfs.
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux mount e2fsprogs xfsprogs \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
 && mkdir -p /run/docker/plugins /var/lib/ballast/mounts /var/lib/ballast/loop /var/lib/ballast/state /etc/ballast
WORKDIR /opt/ballast
COPY --from=build /opt/ballast/package.json ./
COPY --from=build /opt/ballast/node_modules ./node_modules
COPY --from=build /opt/ballast/dist ./dist
ENTRYPOINT ["/usr/local/bin/node", "/opt/ballast/dist/cli/main.js", "serve"]
