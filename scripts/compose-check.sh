#!/bin/bash
# Runs docker-compose.yml for real and checks it (opt-in, not part of .ci/run; docs/compose.md).
# Run it before resolving a change to the Dockerfile, docker-compose.yml, the settings or the
# CLI's serve / api / worker / dashboard commands.
#
# Builds the image (timed, sized), brings the stack up with 3 workers, checks that every service
# with a healthcheck is healthy, the API and the dashboard with and without the token, that no
# worker holds an API token but does get .env's settings; runs studies/sine-lstm.yaml to `done`;
# stops one worker mid-trial and checks that its trial counts as interrupted (not failed), runs
# again elsewhere with the same parameters, and that the study ends with exactly n_trials
# complete; then tears everything down (volumes too) and prints the figures.
#
#   scripts/compose-check.sh                  # Docker: `docker` + `docker compose` (or docker-compose)
#   ENGINE=podman BUILD_FLAGS="-v /opt/wheels:/opt/wheels:ro" scripts/compose-check.sh
#                                             # podman only (docs/compose.md): the check serves
#                                             # podman's Docker API to docker-compose itself
# Env: ENGINE (docker when `docker info` answers, else podman)
#      COMPOSE ("docker compose" when it exists, else docker-compose)
#      BUILD_FLAGS (extra `ENGINE build` flags: --build-arg TORCH_INDEX_URL=..., podman's -v ...)
#      DOCKER_HOST (podman with it unset: the check runs `podman system service` on a socket of
#        its own for the run; set: that API is used as it is)
#      RUN_HEALTHCHECKS (1: the check runs the containers' healthchecks every 5 s itself, as podman
#        without systemd never schedules them; default 1 for podman on a host without systemd)
#      WORKERS (3) API_PORT (18000) DASH_PORT (18080) PROJECT (rnntune-check)
#      IMAGE (rnntune:latest, the compose file's) LOGS (a new temp dir) UP_TIMEOUT_S (600)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
if [ -z "${RUN_HEALTHCHECKS:-}" ]; then
  [ "$ENGINE" = podman ] && [ ! -d /run/systemd/system ] && RUN_HEALTHCHECKS=1 || RUN_HEALTHCHECKS=0
fi
BUILD_FLAGS=${BUILD_FLAGS:-}
[ "$ENGINE" = podman ] && BUILD_FLAGS="--format docker $BUILD_FLAGS"  # podman's OCI format drops HEALTHCHECK
WORKERS=${WORKERS:-3}
API_PORT=${API_PORT:-18000}
DASH_PORT=${DASH_PORT:-18080}
PROJECT=${PROJECT:-rnntune-check}
IMAGE=${IMAGE:-rnntune:latest}
LOGS=${LOGS:-$(mktemp -d /tmp/compose-check.XXXXXX)}
UP_TIMEOUT_S=${UP_TIMEOUT_S:-600}
API=http://127.0.0.1:$API_PORT
DASH=http://127.0.0.1:$DASH_PORT
ENV_FILE=$LOGS/compose.env
FIGURES=$LOGS/figures.txt
SERVICE_PID="" PUMP_PID=""
mkdir -p "$LOGS"
: > "$FIGURES"

log() { echo "[$(date +%T)] $*"; }
now() { date +%s.%N; }
since() { python3 -c "print(round($(now) - $1, 1))"; }
figure() { echo "$*" | tee -a "$FIGURES"; }
fail() { echo "FAIL: $*" | tee -a "$FIGURES" >&2; exit 1; }
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
has_healthcheck() {  # disabled (`healthcheck: disable: true`, the workers) reads [NONE]
  local t
  t=$($ENGINE inspect "$1" --format '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Test}}{{end}}')
  [ -n "$t" ] && [ "$t" != "[NONE]" ] && [ "$t" != "[]" ]
}
health() {  # healthy / starting / unhealthy; "none" for a running container without a healthcheck
  if has_healthcheck "$1"; then
    $ENGINE inspect "$1" --format '{{.State.Health.Status}}'
  else
    echo "none ($($ENGINE inspect "$1" --format '{{.State.Status}}'))"
  fi
}

teardown() {
  local rc=$?
  if [ -s "$ENV_FILE" ]; then
    compose logs --no-color --timestamps > "$LOGS/compose-logs.txt" 2>&1 || true
    local t0; t0=$(now)
    compose down -v > "$LOGS/down.log" 2>&1 || true
    figure "$COMPOSE down -v: $(since "$t0") s"
  fi
  if [ -n "$PUMP_PID" ]; then kill "$PUMP_PID" 2>/dev/null || true; fi
  if [ -n "$SERVICE_PID" ]; then kill "$SERVICE_PID" 2>/dev/null || true; fi
  echo "--- figures ($FIGURES; logs in $LOGS) ---"
  cat "$FIGURES"
  if [ "$rc" = 0 ]; then echo "compose check: PASSED"; else echo "compose check: FAILED (exit $rc)"; fi
}

podman_api() {  # podman's Docker API for docker-compose, for this run only
  [ "$ENGINE" = podman ] && [ -z "${DOCKER_HOST:-}" ] || return 0
  local sock=$LOGS/podman.sock
  podman system service --time=0 "unix://$sock" > "$LOGS/podman-service.log" 2>&1 &
  SERVICE_PID=$!
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
  [ -S "$sock" ] || fail "podman system service did not open $sock"
  export DOCKER_HOST=unix://$sock
}

healthcheck_pump() {  # what the engine's scheduler does: every container's healthcheck, every 5 s
  [ "$RUN_HEALTHCHECKS" = 1 ] || return 0
  (
    while true; do
      for c in $(containers); do
        if has_healthcheck "$c"; then timeout 10 "$ENGINE" healthcheck run "$c" > /dev/null 2>&1 & fi
      done
      wait
      sleep 5
    done
  ) > /dev/null 2>&1 &
  PUMP_PID=$!
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
  figure "image build ($ENGINE build ${BUILD_FLAGS:-}): $(since "$t0") s"
  local bytes torch
  bytes=$($ENGINE image inspect "$IMAGE" --format '{{.Size}}')
  torch=$($ENGINE run --rm --no-healthcheck --entrypoint python "$IMAGE" -c \
    "import torch, pathlib; p = pathlib.Path(torch.__file__).parent; print(torch.__version__, round(sum(f.stat().st_size for f in p.rglob('*') if f.is_file()) / 1e6))")
  figure "image size: $bytes bytes ($(python3 -c "print(round($bytes / 1e9, 2))") GB); torch ${torch% *}: ${torch#* } MB"
}

up() {
  log "$COMPOSE up -d --scale worker=$WORKERS"
  local t0 c state unhealthy; t0=$(now)
  timeout "$UP_TIMEOUT_S" $COMPOSE --env-file "$ENV_FILE" -p "$PROJECT" up -d --no-build --scale worker="$WORKERS" \
    > "$LOGS/up.log" 2>&1 || { cat "$LOGS/up.log"; fail "compose up"; }
  figure "$COMPOSE up -d --scale worker=$WORKERS returned: $(since "$t0") s"
  for _ in $(seq 240); do [ "$(code "$API/readyz")" = 200 ] && break; sleep 0.5; done
  [ "$(code "$API/readyz")" = 200 ] || fail "the API never answered /readyz"
  figure "up -> API /readyz 200: $(since "$t0") s"
  for _ in $(seq 180); do
    unhealthy=""
    for c in $(containers); do
      state=$(health "$c")
      case "$state" in healthy | "none (running)") ;; *) unhealthy+=" $c=$state" ;; esac
    done
    [ -z "$unhealthy" ] && break
    sleep 1
  done
  [ -z "$unhealthy" ] || fail "not healthy after 180 s:$unhealthy"
  figure "up -> every service with a healthcheck healthy: $(since "$t0") s"
  for c in $(containers); do echo "  $c: $(health "$c")"; done | sort | tee -a "$FIGURES"
  for c in postgres api dashboard; do [ "$(containers $c | wc -l)" = 1 ] || fail "no running $c container"; done
  [ "$(containers worker | wc -l)" = "$WORKERS" ] || fail "expected $WORKERS worker containers"
}

check_access() {
  local open api_tok dash dash_tok
  open=$(code "$API/v1/studies"); api_tok=$(code -H "Authorization: Bearer $TOKEN" "$API/v1/studies")
  dash=$(code "$DASH/dashboard"); dash_tok=$(code -H "Authorization: Bearer $TOKEN" "$DASH/dashboard")
  figure "API /v1/studies without token: $open, with: $api_tok; dashboard /dashboard without token: $dash, with: $dash_tok"
  [ "$open" = 401 ] && [ "$api_tok" = 200 ] && [ "$dash" = 401 ] && [ "$dash_tok" = 200 ] || fail "token checks"
  local c env
  for c in $(containers worker); do
    env=$($ENGINE exec "$c" env)
    if grep -q '^RNNTUNE_API_TOKEN' <<< "$env" || grep -qF "$TOKEN" <<< "$env"; then fail "$c holds an API token"; fi
    grep -qx 'RNNTUNE_MAX_RETRIES=3' <<< "$env" || fail "$c lacks RNNTUNE_MAX_RETRIES from the env file"
  done
  figure "worker environments: no API token; .env settings present (RNNTUNE_MAX_RETRIES=3 in all $WORKERS)"
}

submit() { curl -sf -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/yaml' --data-binary @"$1" "$API/v1/studies" || fail "submit $1"; }

wait_done() {
  local st=""
  for _ in $(seq 900); do
    st=$(authget "/v1/studies/$1" | jget 'd["state"]') || true
    case "$st" in done | failed | cancelled) break ;; esac
    sleep 1
  done
  [ "$st" = done ] || fail "study $1 ended ${st:-never}"
}

counts_ok() {  # counts_ok STUDY PYTHON-CONDITION-ON-d-AND-c: prints the counts, fails unless it holds
  local line
  line=$(authget "/v1/studies/$1" | jget '"  %s: state=%s n_trials=%s finished=%s counts=%s best=%s" % (d["name"], d["state"], d["n_trials"], d["finished"], d["counts"], d["best_value"])')
  figure "$line"
  authget "/v1/studies/$1" | jget "(lambda c: $2)(d['counts'])" | grep -qx True || fail "$1: counts are not $2"
}

study() {
  log "submitting studies/sine-lstm.yaml"
  local t0; t0=$(now)
  submit studies/sine-lstm.yaml
  wait_done sine-lstm
  figure "study sine-lstm ($WORKERS workers), submit -> done: $(since "$t0") s"
  counts_ok sine-lstm 'd["finished"] == d["n_trials"] and c["failed"] == 0 and c["running"] == 0'
}

stop_spec() {  # 3 trials of 15 epochs (~40 s on 1 thread), so that a worker can be stopped mid-trial
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
}

stop_and_retry() {
  stop_spec
  log "submitting a study of 3 longer trials; stopping one worker mid-trial"
  submit "$LOGS/stop.yaml"
  local host="-" trial="-" victim="" c t0
  for _ in $(seq 300); do
    read -r host trial < <(authget /v1/workers | jget '" ".join(next(([w["host"], str(w["trial_number"])] for w in d["items"] if w["state"] == "busy" and w["study"] == "compose-check-stop" and w["trial_number"] is not None), ["-", "-"]))') || true
    if [ "$trial" != - ] && authget "/v1/studies/compose-check-stop/trials?limit=10" \
         | jget "any(t['number'] == $trial and t['state'] == 'RUNNING' and (t['epochs'] or 0) >= 2 for t in d['items'])" | grep -qx True; then break; fi
    trial=-; sleep 1
  done
  [ "$trial" != - ] || fail "no trial reached epoch 2"
  for c in $(containers worker); do [ "$($ENGINE inspect "$c" --format '{{.Config.Hostname}}')" = "$host" ] && victim=$c; done
  [ -n "$victim" ] || fail "no worker container has hostname $host"
  t0=$(now)
  $ENGINE stop -t 60 "$victim" > "$LOGS/stop.log" 2>&1  # the compose file's stop_grace_period
  local exit_code; exit_code=$($ENGINE inspect "$victim" --format '{{.State.ExitCode}}')
  figure "stopped $victim mid-trial $trial: $(since "$t0") s, exit code $exit_code"
  [ "$exit_code" = 0 ] || fail "the stopped worker exited $exit_code, not 0"
  t0=$(now)
  wait_done compose-check-stop
  figure "the rest of compose-check-stop on $((WORKERS - 1)) workers: $(since "$t0") s"
  authget "/v1/studies/compose-check-stop/trials?limit=100" > "$LOGS/stop-trials.json"
  python3 - "$trial" "$LOGS/stop-trials.json" <<'EOF' | tee -a "$FIGURES"
import json, sys
stopped, items = int(sys.argv[1]), json.load(open(sys.argv[2]))["items"]
by = {t["number"]: t for t in items}
retries = [t for t in items if t["user_attrs"].get("retry_of") == stopped]
for t in sorted(items, key=lambda t: t["number"]):
    a = t["user_attrs"]
    print(f"  trial {t['number']} {t['state']} epochs={t['epochs']} retry_of={a.get('retry_of')} "
          f"interrupted={a.get('interrupted')!r} params={t['params']}")
old = by[stopped]
ok = old["state"] == "FAIL" and "interrupted" in old["user_attrs"] and "fail_reason" not in old["user_attrs"]
ok = ok and any(r["state"] == "COMPLETE" and r["params"] == old["params"] for r in retries)
print(f"stop-and-retry: trial {stopped} -> {old['state']} (interrupted), retried as {[r['number'] for r in retries]} "
      f"with the same params: {'OK' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF
  counts_ok compose-check-stop 'c["complete"] == d["n_trials"] and c["failed"] == 0 and c["interrupted"] >= 1'
  $ENGINE exec -e RNNTUNE_API_URL=http://127.0.0.1:8000 -e "RNNTUNE_API_TOKEN=$TOKEN" "$(containers api)" \
    rnntune status compose-check-stop > "$LOGS/status.txt" 2>&1 || { cat "$LOGS/status.txt"; fail "rnntune status in the api container"; }
  figure "rnntune status compose-check-stop (in the api container): $(head -1 "$LOGS/status.txt")"
  grep -q 'failed 0, interrupted [1-9]' "$LOGS/status.txt" || fail "rnntune status does not show the stopped trial as interrupted"
}

make_env
trap teardown EXIT
figure "host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start; $($ENGINE --version); $($COMPOSE version 2>/dev/null | head -1)"
$COMPOSE --env-file "$ENV_FILE" config -q
podman_api
build
healthcheck_pump
up
check_access
study
stop_and_retry
