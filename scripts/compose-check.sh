#!/bin/bash
# Runs docker-compose.yml for real and checks it (opt-in, not part of .ci/run; docs/compose.md).
# Builds the image, brings the stack up with 3 workers, submits a small study with a token and
# waits for `done`, checks every service's health, the dashboard with and without the token, that
# no worker holds an API token, stops one worker mid-trial and checks its trial runs again with
# the same parameters, then tears everything down (volumes too). Prints the timings at the end.
#
#   scripts/compose-check.sh                      # Docker: `docker` + `docker compose`
#   ENGINE=podman COMPOSE=docker-compose BUILD_FLAGS="--format docker -v /opt/wheels:/opt/wheels:ro" \
#     scripts/compose-check.sh                    # podman's Docker API (docs/compose.md)
# Env: ENGINE (docker, else podman) COMPOSE ("docker compose", else docker-compose)
#      BUILD_FLAGS (extra build flags) WORKERS (3) API_PORT (18000) DASH_PORT (18080)
#      PROJECT (rnntune-check) IMAGE (rnntune:latest, the compose file's) LOGS (a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-$(command -v docker >/dev/null && echo docker || echo podman)}
if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
WORKERS=${WORKERS:-3}
API_PORT=${API_PORT:-18000}
DASH_PORT=${DASH_PORT:-18080}
PROJECT=${PROJECT:-rnntune-check}
IMAGE=${IMAGE:-rnntune:latest}
LOGS=${LOGS:-$(mktemp -d /tmp/compose-check.XXXXXX)}
API=http://127.0.0.1:$API_PORT
DASH=http://127.0.0.1:$DASH_PORT
ENV_FILE=$LOGS/compose.env
TIMINGS=$LOGS/timings.txt
: > "$TIMINGS"

log() { echo "[$(date +%T)] $*"; }
now() { date +%s.%N; }
since() { python3 -c "print(round($(now) - $1, 1))"; }
timing() { echo "$*" | tee -a "$TIMINGS"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
compose() { $COMPOSE --env-file "$ENV_FILE" -p "$PROJECT" "$@"; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
authget() { curl -sf -H "Authorization: Bearer $TOKEN" "$API$1"; }
containers() {  # the running containers of the project, or of one of its services
  local c
  for c in $($ENGINE ps --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}'); do
    if [ -z "${1:-}" ] || [ "$($ENGINE inspect "$c" --format '{{index .Config.Labels "com.docker.compose.service"}}')" = "$1" ]; then echo "$c"; fi
  done
}
health() { $ENGINE inspect "$1" --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}'; }

teardown() {
  local rc=$?
  compose logs --no-color --timestamps > "$LOGS/compose-logs.txt" 2>&1 || true
  local t0; t0=$(now)
  compose down -v > "$LOGS/down.log" 2>&1 || true
  timing "docker-compose down -v: $(since "$t0") s"
  echo "--- timings ($LOGS/timings.txt; logs in $LOGS) ---"
  cat "$TIMINGS"
  [ "$rc" = 0 ] && echo "compose check: PASSED" || echo "compose check: FAILED (exit $rc)"
}

make_env() {  # .env.example with fresh secrets and free ports; the user's .env is left alone
  local pw
  pw=$(python3 -c "import secrets; print(secrets.token_urlsafe(24))")
  TOKEN=$(python3 -c "import secrets; print(secrets.token_urlsafe(32))")
  sed -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$pw|" -e "s|^RNNTUNE_API_TOKENS=.*|RNNTUNE_API_TOKENS=$TOKEN|" \
      -e "s|^RNNTUNE_API_PORT=.*|RNNTUNE_API_PORT=$API_PORT|" -e "s|^RNNTUNE_DASHBOARD_PORT=.*|RNNTUNE_DASHBOARD_PORT=$DASH_PORT|" \
      -e "s|^RNNTUNE_MAX_RETRIES=.*|RNNTUNE_MAX_RETRIES=3|" .env.example > "$ENV_FILE"
  chmod 600 "$ENV_FILE"
}

build() {
  log "building $IMAGE ($ENGINE build $BUILD_FLAGS)"
  local t0; t0=$(now)
  # shellcheck disable=SC2086  # BUILD_FLAGS is a list of flags
  $ENGINE build ${BUILD_FLAGS:-} -t "$IMAGE" . > "$LOGS/build.log" 2>&1 || { tail -20 "$LOGS/build.log"; fail "image build"; }
  timing "image build: $(since "$t0") s"
  local bytes; bytes=$($ENGINE image inspect "$IMAGE" --format '{{.Size}}')
  timing "image size: $bytes bytes ($(python3 -c "print(round($bytes / 1e9, 2))") GB)"
}

up() {
  log "$COMPOSE up -d --scale worker=$WORKERS"
  local t0 c; t0=$(now)
  compose up -d --no-build --scale worker="$WORKERS" > "$LOGS/up.log" 2>&1 || { cat "$LOGS/up.log"; fail "compose up"; }
  for _ in $(seq 240); do [ "$(code "$API/readyz")" = 200 ] && break; sleep 0.5; done
  [ "$(code "$API/readyz")" = 200 ] || fail "the API never answered /readyz"
  timing "up -> API /readyz 200: $(since "$t0") s"
  for _ in $(seq 180); do
    local unhealthy=""
    for c in $(containers); do  # workers have no healthcheck (compose disables it): running
      case "$(health "$c")" in healthy) ;; running) [[ $c == *_worker_* || $c == *-worker-* ]] || unhealthy+=" $c" ;; *) unhealthy+=" $c" ;; esac
    done
    [ -z "$unhealthy" ] && break; sleep 1
  done
  [ -z "$unhealthy" ] || fail "not healthy after 180 s:$unhealthy"
  timing "up -> every service healthy: $(since "$t0") s"
  for c in $(containers); do echo "  $c: $(health "$c")"; done | sort | tee -a "$TIMINGS"
  [ "$(containers worker | wc -l)" = "$WORKERS" ] || fail "expected $WORKERS worker containers"
}

check_access() {
  local open dash dash_tok
  open=$(code "$API/v1/studies"); dash=$(code "$DASH/dashboard"); dash_tok=$(code -H "Authorization: Bearer $TOKEN" "$DASH/dashboard")
  timing "API /v1/studies without token: $open; dashboard without token: $dash, with token: $dash_tok"
  [ "$open" = 401 ] && [ "$dash" = 401 ] && [ "$dash_tok" = 200 ] || fail "token checks"
  local c env
  for c in $(containers worker); do
    env=$($ENGINE exec "$c" env)
    if grep -q '^RNNTUNE_API_TOKEN' <<< "$env" || grep -qF "$TOKEN" <<< "$env"; then fail "$c holds an API token"; fi
    grep -qx 'RNNTUNE_MAX_RETRIES=3' <<< "$env" || fail "$c lacks RNNTUNE_MAX_RETRIES from the env file"
  done
  timing "worker environments: no API token; .env settings present (RNNTUNE_MAX_RETRIES=3)"
}

submit() { curl -sf -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/yaml' --data-binary @"$1" "$API/v1/studies" || fail "submit $1"; }

wait_done() {
  local st=""
  for _ in $(seq 900); do
    st=$(authget "/v1/studies/$1" | jget 'd["state"]') || true
    case "$st" in done | failed | cancelled) break ;; esac
    sleep 1
  done
  [ "$st" = done ] || fail "study $1 ended $st"
}

study() {
  log "submitting studies/sine-lstm.yaml"
  local t0; t0=$(now)
  submit studies/sine-lstm.yaml
  wait_done sine-lstm
  timing "study sine-lstm ($WORKERS workers), submit -> done: $(since "$t0") s"
  authget /v1/studies/sine-lstm | jget '"  state=%s finished=%s counts=%s best=%s" % (d["state"], d["finished"], d["counts"], d["best_value"])' | tee -a "$TIMINGS"
}

stop_and_retry() {  # trials of ~15 epochs, so that a worker can be stopped in the middle of one
  cat > "$LOGS/stop.yaml" <<'EOF'
name: compose-check-stop
direction: minimize
metric: val_loss
data: {name: sine, params: {n_series: 600, length: 50, noise: 0.05, seed: 1}, window: 24, horizon: 1}
model: {cell: lstm}
search_space:
  hidden_size: {type: int, low: 48, high: 64}
  num_layers: {type: int, low: 2, high: 2}
  lr: {type: float, low: 1.0e-3, high: 3.0e-3, log: true}
  batch_size: {type: categorical, choices: [32]}
sampler: {name: random, seed: 1}
pruner: {name: none}
budget: {n_trials: 3, max_epochs: 15, timeout_s: 900, max_failed_trials: 3}
EOF
  log "submitting a study of 3 longer trials; stopping one worker mid-trial"
  submit "$LOGS/stop.yaml"
  local host trial victim="" c t0
  for _ in $(seq 300); do
    read -r host trial < <(authget /v1/workers | jget '" ".join(next(([w["id"].split("-")[0], str(w["trial_number"])] for w in d["items"] if w["state"] == "busy" and w["trial_number"] is not None), ["-", "-"]))') || true
    if [ "$trial" != - ] && authget "/v1/studies/compose-check-stop/trials?limit=10" \
         | jget "any(t['number'] == $trial and (t['epochs'] or 0) >= 2 for t in d['items'])" | grep -qx True; then break; fi
    trial=-; sleep 1
  done
  [ "$trial" != - ] || fail "no trial reached epoch 2"
  for c in $(containers worker); do [ "$($ENGINE inspect "$c" --format '{{.Config.Hostname}}')" = "$host" ] && victim=$c; done
  [ -n "$victim" ] || fail "no worker container has hostname $host"
  t0=$(now)
  $ENGINE stop "$victim" > /dev/null
  timing "stopped $victim mid-trial $trial: $(since "$t0") s, exit code $($ENGINE inspect "$victim" --format '{{.State.ExitCode}}')"
  wait_done compose-check-stop
  authget "/v1/studies/compose-check-stop/trials?limit=100" > "$LOGS/stop-trials.json"
  python3 - "$trial" "$LOGS/stop-trials.json" <<'EOF' | tee -a "$TIMINGS"
import json, sys
stopped, items = int(sys.argv[1]), json.load(open(sys.argv[2]))["items"]
by = {t["number"]: t for t in items}
retries = [t for t in items if t["user_attrs"].get("retry_of") == stopped]
for t in sorted(items, key=lambda t: t["number"]):
    print(f"  trial {t['number']} {t['state']} epochs={t['epochs']} retry_of={t['user_attrs'].get('retry_of')} params={t['params']}")
ok = by[stopped]["state"] != "RUNNING" and any(r["state"] == "COMPLETE" and r["params"] == by[stopped]["params"] for r in retries)
print(f"stop-and-retry: trial {stopped} -> {by[stopped]['state']}, retried as {[r['number'] for r in retries]} with the same params: {'OK' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF
}

make_env
trap teardown EXIT
$COMPOSE --env-file "$ENV_FILE" config -q
build
up
check_access
study
stop_and_retry
