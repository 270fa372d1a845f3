#!/usr/bin/env bash
# Reuse the Redis at $REDIS_URL, or start a local one with persistence under ./data/redis.
set -euo pipefail
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
if redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  echo "using the Redis at $REDIS_URL"
  exit 0
fi
"$(dirname "$0")/ensure-redis-server.sh"
hostport="${REDIS_URL#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=6379
mkdir -p data/redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$PWD/data/redis" \
  --appendonly yes --appendfsync everysec --logfile "$PWD/data/redis/redis.log" \
  --maxmemory "${REDIS_MAXMEMORY:-2gb}" --maxmemory-policy noeviction --hash-max-listpack-value 4096
for _ in $(seq 1 100); do
  redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && { echo "started Redis on port $port (data in data/redis)"; exit 0; }
  sleep 0.1
done
echo "Redis did not start; see data/redis/redis.log" >&2
exit 1
