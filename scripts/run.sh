#!/usr/bin/env bash
# `make run`: Redis, then the API and one worker pool per provider in the foreground (honcho).
# With no provider key set, the simulated upstream stands in for both providers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
[ -f .env ] && set -a && . ./.env && set +a
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export API_HOST="${API_HOST:-127.0.0.1}" API_PORT="${API_PORT:-8000}" API_PROCESSES="${API_PROCESSES:-2}"
export SIMULATOR_PORT="${SIMULATOR_PORT:-8900}"
scripts/ensure-redis.sh

processes=(api worker-openai worker-anthropic)
if [ -z "${OPENAI_API_KEY:-}" ] && [ -z "${ANTHROPIC_API_KEY:-}" ]; then
  echo "no provider key set: both providers are served by the simulator on port $SIMULATOR_PORT"
  export OPENAI_API_KEY="sk-simulated-openai" ANTHROPIC_API_KEY="sk-ant-simulated"
  export OPENAI_BASE_URL="http://127.0.0.1:$SIMULATOR_PORT/openai/v1"
  export ANTHROPIC_BASE_URL="http://127.0.0.1:$SIMULATOR_PORT/anthropic"
  processes+=(simulator)
fi
if [ -z "${JWT_SECRET:-}" ] && [ -z "${JWT_PUBLIC_KEY_FILE:-}" ] && [ -z "${JWT_JWKS_FILE:-}" ]; then
  mkdir -p data
  [ -f data/jwt-secret ] || python -c "import secrets; print(secrets.token_urlsafe(48))" > data/jwt-secret
  JWT_SECRET="$(cat data/jwt-secret)"
  export JWT_SECRET
  echo "no JWT key configured: using a generated HS256 secret in data/jwt-secret"
fi

url="http://$API_HOST:$API_PORT"
(
  python -m devstack.wait_ready "$url/readyz" 60 >/dev/null 2>&1 || exit 0
  token="$(python -m api.token_cli --sub demo --role admin --ttl 12h 2>/dev/null || true)"
  cat <<MSG

  LLM gateway ready at $url   (OpenAPI docs: $url/docs)

  curl -s $url/api/v1/llm/chat/completions \\
    -H 'Content-Type: application/json' \\
    -H "Authorization: Bearer $token" \\
    -d '{"messages":[{"role":"user","content":"Hello, how are you?"}],"maxTokens":50}'

MSG
) &
exec honcho start --no-prefix "${processes[@]}" 2>&1
