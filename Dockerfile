# sockpit image: node:20-slim, built in one stage and run in another, as the unprivileged `node`
# user. docker-compose.yml runs two of these behind nginx (docs/deploying.md).

# ---- build: dependencies (with the dev tools), bundle, then drop the dev tools ----
FROM node:20-slim AS build
WORKDIR /app
# Only needed when better-sqlite3 has no prebuilt binary for this platform and must compile.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first, so a source change does not reinstall them. Scripts are held back because
# the package's own `prepare` (the build) needs the sources; `npm rebuild` then runs those of the
# dependencies (better-sqlite3 and bcrypt fetch or compile their native parts, esbuild its binary).
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund && npm rebuild
COPY . .
RUN node scripts/build.mjs && npm prune --omit=dev --no-audit --no-fund

# ---- run ----
FROM node:20-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DEVICE_PORT=7000 \
    DATA_DIR=/data
WORKDIR /app
# The code stays owned by root (read-only to the server); only DATA_DIR is writable.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/public ./public
COPY --from=build /app/views ./views
COPY --from=build /app/bin ./bin
# /data/tls exists in the image, owned by node, so that a new volume mounted there (compose
# shares one between the instances for the TLS CA) starts with that owner instead of root's.
RUN mkdir -p /data/tls && chown node:node /data /data/tls && chmod 700 /data/tls
USER node
# HTTP (pages, Socket.IO, ws:// devices), TCP lines, MQTT, TCP lines over TLS, MQTT over TLS.
EXPOSE 3000 7000 1883 7443 8883
# Ready means storage (and Redis, when REDIS_URL is set) answer: GET /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "--max-semi-space-size=8", "dist/main.js"]
