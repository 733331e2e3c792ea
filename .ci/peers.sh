#!/usr/bin/env bash
# Installs the official MCP SDKs the interop tests run (tests/peers/) into the git-ignored
# .tools/peers/, from the package registries only:
#   .tools/peers/node_modules   npm (locked): @modelcontextprotocol/sdk, /server, /server-everything
#   .tools/peers/venv           PyPI: mcp
# Idempotent and safe to run from several test processes at once (flock); prints the
# install root. Tests call it through tests/support/peers.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=.tools/peers
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
stamp=$(cat tests/peers/package.json tests/peers/package-lock.json tests/peers/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$root/.stamp" 2>/dev/null)" != "$stamp" ]; then
  cp tests/peers/package.json tests/peers/package-lock.json "$root/"
  (cd "$root" && npm ci --no-audit --no-fund --loglevel=error >&2)
  rm -rf "$root/venv"
  python3 -m venv "$root/venv"
  "$root/venv/bin/pip" install --quiet --disable-pip-version-check -r tests/peers/requirements.txt >&2
  echo "$stamp" >"$root/.stamp"
fi
cd "$root" && pwd
