#!/bin/sh
# README's dev command: installs what is missing, applies the D1 migrations to the local
# databases (DB and the user shards) and serves the worker at http://127.0.0.1:8787 (extra arguments go to wrangler dev).
set -eu
. "$(dirname -- "$0")/toolchain.sh"
cd "$EDGEID_ROOT"
ensure_toolchain
node scripts/dev-vars.mjs
node scripts/migrate-local.mjs
token=$(sed -n 's/^CLIENT_REGISTRATION_TOKEN="\(.*\)"$/\1/p' .dev.vars)
cat <<EOF
edgeid: to register an app (a relying party) with this server:
  curl -X POST http://127.0.0.1:8787/oauth/register -H "Authorization: Bearer $token" \\
       -H 'content-type: application/json' \\
       -d '{"client_name": "My app", "redirect_uris": ["http://127.0.0.1:3000/callback"]}'
EOF
exec npx wrangler dev --ip 127.0.0.1 --port 8787 "$@"
