#!/usr/bin/env bash
# Starts one agent with the regional schema, seeds a few machines and
# leaves it running until Ctrl-C. The two-tier topology will replace this.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin/patina}
DATA=${DATA:-.demo}
ADDR=${ADDR:-127.0.0.1:8080}
# Every demo starts from an empty database.
rm -rf "$DATA"
mkdir -p "$DATA"
cat > "$DATA/agent.toml" <<TOML
[db]
path = "$DATA/patina.db"
schema_paths = ["schemas/regional"]
[api]
addr = "$ADDR"
TOML

"$BIN" agent --config "$DATA/agent.toml" &
agent=$!
stop() { kill -INT $agent 2>/dev/null || true; wait $agent 2>/dev/null || true; }
trap 'stop; exit 0' INT TERM
trap stop EXIT
export PATINA_API="http://$ADDR"
for _ in $(seq 1 100); do
	"$BIN" query 'SELECT 1' >/dev/null 2>&1 && break
	kill -0 $agent 2>/dev/null || { echo "agent exited" >&2; exit 1; }
	sleep 0.1
done

i=0
for app in web api worker; do
	for n in 1 2; do
		i=$((i + 1))
		"$BIN" exec "INSERT INTO machines (id, app, region, host, address, port, state, image, updated_at)
			VALUES (?, ?, 'ams', ?, ?, 8080, 'started', ?, strftime('%s','now') * 1000)
			ON CONFLICT (id) DO UPDATE SET state = excluded.state" \
			--param "m$i" --param "$app" --param "host$n" --param "fdaa::$i" --param "registry/$app:v1" >/dev/null
	done
done

cat <<TXT

patina agent running: API $PATINA_API, database $DATA/patina.db

  $BIN query 'SELECT id, app, state, address FROM machines'
  $BIN subscribe 'SELECT id, state FROM machines WHERE app = ?' --param web   # in another terminal
  $BIN exec "UPDATE machines SET state = 'stopped' WHERE id = 'm1'"
  curl -s -XPOST $PATINA_API/v1/queries -d '"SELECT app, count(*) FROM machines GROUP BY app"'
  sqlite3 $DATA/patina.db 'select count(*) from machines'

Ctrl-C stops it.
TXT
wait $agent
