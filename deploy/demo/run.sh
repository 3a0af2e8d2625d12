#!/usr/bin/env bash
# Runs the whole two-tier topology on loopback until Ctrl-C: three
# regions (ams, iad, syd) of three agents, each agent with a host agent
# beside it, a bridge per region, three global agents, and demo apps whose
# machines are real HTTP servers. Addresses are printed and written to
# $DATA/endpoints.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin/patina}
DATA=${DATA:-.demo}
exec "$BIN" dev --data "$DATA" --base-port "${BASE_PORT:-7100}" "$@"
