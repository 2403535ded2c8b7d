# Quire's production image: Node 24 runs the TypeScript sources directly (type stripping), so there is no build
# step; only production dependencies are installed, and the process runs as the unprivileged `node` user.
# One image, three commands (see docker-compose.yml): `node bin/migrate.ts` migrates, `node bin/server.ts` serves,
# `node bin/worker.ts` runs jobs.
FROM node:24-slim AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
# npm install (not npm ci) with the lockfile: npm 11's npm ci rejects lockfiles lacking other platforms'
# optional binaries (see .ci/run).
RUN npm install --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=5678
WORKDIR /app
COPY --from=dependencies /app/node_modules ./node_modules
COPY package.json .gmrc schema.graphql ./
COPY bin ./bin
COPY lib ./lib
COPY db ./db
COPY migrations ./migrations
COPY server ./server
COPY worker ./worker
# The local object store's directory (STORAGE_DIR in docker-compose.yml): a new volume takes its owner from here.
RUN mkdir -p /var/lib/quire/objects && chown node:node /var/lib/quire/objects
USER node
EXPOSE 5678
CMD ["node", "bin/server.ts"]
