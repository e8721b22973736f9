# The rootfs of ballast's managed plugin (docker plugin create). See README.md, "Managed plugin".
# Build stage: compile TypeScript and keep only production dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /opt/ballast
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime: node plus the host-side tools the attachers run (losetup, blkid, mkfs, fsck, mount).
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux mount e2fsprogs xfsprogs \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/docker/plugins /var/lib/ballast/mounts /var/lib/ballast/loop /var/lib/ballast/state /etc/ballast
WORKDIR /opt/ballast
COPY --from=build /opt/ballast/package.json ./
COPY --from=build /opt/ballast/node_modules ./node_modules
COPY --from=build /opt/ballast/dist ./dist
ENTRYPOINT ["/usr/local/bin/node", "/opt/ballast/dist/cli/main.js", "serve"]
