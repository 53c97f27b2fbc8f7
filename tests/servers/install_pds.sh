#!/usr/bin/env bash
# install_pds.sh - install the real reference Bluesky PDS (@atproto/pds) and the PLC
# directory (@did-plc/server) from npm into a cache folder, once.
#
#   tests/servers/install_pds.sh            # -> $RELAY_CACHE/pds (default ~/.cache/relay-ci/pds)
#
# Runs on the system Node 20 with the last 0.4.x PDS (0.5.x needs Node >= 22.19).
# better-sqlite3 compiles from source (no prebuilt download offline): ~3 min on 2 cores.
# A finished install leaves a stamp; a second call with the same versions does nothing.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${RELAY_CACHE:-$HOME/.cache/relay-ci}"
PDS_VERSION="${PDS_VERSION:-0.4.217}"
PLC_VERSION="${PLC_VERSION:-0.0.1}"
PDS_DIR="${PDS_DIR:-$CACHE/pds}"
STAMP="$PDS_DIR/.installed-$PDS_VERSION-$PLC_VERSION-$(node --version)"

command -v node >/dev/null || { echo "install_pds: node is not installed" >&2; exit 1; }
if [ -f "$STAMP" ]; then
  cp "$HERE/start_pds.mjs" "$PDS_DIR/"
  exit 0
fi
NODEDIR="$(dirname "$(dirname "$(command -v node)")")"
mkdir -p "$PDS_DIR"
cd "$PDS_DIR"
[ -f package.json ] || echo '{"name":"relay-test-pds","private":true}' > package.json
# --nodedir: node-gyp cannot download headers offline; point it at the system Node's.
npm install --no-audit --no-fund --nodedir="$NODEDIR" \
  "@atproto/pds@${PDS_VERSION}" "@did-plc/server@${PLC_VERSION}" >&2
cp "$HERE/start_pds.mjs" .
node -e "require('better-sqlite3')"
node -e "import('@atproto/pds').then(() => {})"
touch "$STAMP"
echo "install_pds: PDS $PDS_VERSION ready in $PDS_DIR" >&2
