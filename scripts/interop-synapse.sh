#!/usr/bin/env bash
# Presence between a real Synapse and presenced over federation (issue 4).
#
# Installs matrix-synapse from PyPI into target/synapse-venv (the venv
# scripts/bench-vs-synapse.sh uses; reused when the version matches) while
# building presenced (debug), makes a test CA and a certificate per server,
# then starts on loopback:
#   - Synapse `localhost:<port>`: TLS federation listener + plain client
#     listener, the test CA as its only federation CA, loopback allowed,
#     no trusted key servers, a StaticRoutes-like presence router
#     (scripts/interop/static_routes_router.py);
#   - presenced `localhost:<port>`: TLS federation listener + plain client
#     listener, the test CA as its federation CA, and the same Python router
#     file as Synapse (scripts/interop/static_routes_router.py) in Synapse's venv.
# Both route @alice (Synapse) <-> @bob (presenced); they share no room.
# scripts/interop/drive.py then registers the users, sets presence on one
# side and long-polls /sync on the other, both ways, and checks that the
# unrouted @carol (Synapse) and @dave (presenced) see nothing.
#
# Prints phase timings and PUT -> /sync times (first and later deliveries);
# exits non-zero with log tails when presence does not cross within
# INTEROP_DEADLINE seconds (default 60) per delivery.
#
# Environment: SYNAPSE_VERSION (default 1.163.2), INTEROP_ROUNDS (deliveries
# per direction, default 4), INTEROP_DEADLINE, INTEROP_KEEP=1 (leave the
# run directory target/interop-synapse/ in place; it is always kept on
# failure), PYTHON (default python3), INTEROP_CERTS=python (make the
# certificates with Python's cryptography even when openssl is installed),
# INTEROP_PRESENCED_TLS=native|proxy (presenced's own TLS listener, or a
# TLS-terminating proxy in front of a plain one; default: native when this
# presenced has `tls_certificate_path`), INTEROP_ONLY=synapse->presenced or
# presenced->synapse (one direction only, for debugging), INTEROP_CLUSTER=1
# (presenced as a 3-node cluster: 3 nats-server, a fresh PostgreSQL
# database, each node with one plain listener behind random-node proxies for
# the client and federation ports, tests/cluster/harness.py; needs psql and
# PostgreSQL at PRESENCED_TEST_POSTGRES).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
ROUNDS="${INTEROP_ROUNDS:-4}"
DEADLINE="${INTEROP_DEADLINE:-60}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/target/synapse-venv"
RUN="$ROOT/target/interop-synapse"
SYN_SECRET="interop-synapse-secret"
PD_SECRET="interop-presenced-secret"
CLUSTER="${INTEROP_CLUSTER:-0}"

log() { echo "interop-synapse: $*" >&2; }
T_START=$(date +%s.%N)
T_PHASE=$T_START
PHASES=""
phase_done() { # name
  local now; now=$(date +%s.%N)
  local took; took=$(awk -v a="$T_PHASE" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
  log "phase $1: ${took} s"
  PHASES="$PHASES$1=${took}s "
  T_PHASE=$now
}

rm -rf "$RUN"
mkdir -p "$RUN"

# --- Synapse install (background) and presenced build, side by side ---------
synapse_version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null; }
INSTALL_PID=""
if [ "$(synapse_version)" != "$SYNAPSE_VERSION" ]; then
  log "installing matrix-synapse==$SYNAPSE_VERSION into $VENV (in the background)"
  (
    "$PYTHON" -m venv "$VENV" &&
      "$VENV/bin/pip" install -q --disable-pip-version-check --no-input "matrix-synapse==$SYNAPSE_VERSION"
  ) >"$RUN/pip.log" 2>&1 &
  INSTALL_PID=$!
else
  log "matrix-synapse $SYNAPSE_VERSION already in $VENV"
fi
log "building presenced (debug)"
cargo build -q -p presenced-server --bin presenced
PRESENCED="$TARGET/debug/presenced"
phase_done build-presenced
if [ -n "$INSTALL_PID" ]; then
  wait "$INSTALL_PID" || { tail -30 "$RUN/pip.log" >&2; log "Synapse install failed"; exit 1; }
  [ "$(synapse_version)" = "$SYNAPSE_VERSION" ] || { log "Synapse install left no matrix-synapse $SYNAPSE_VERSION"; exit 1; }
fi
phase_done install-synapse

# --- Test CA and server certificates ----------------------------------------
CERTS="$RUN/certs"
mkdir -p "$CERTS"
if command -v openssl >/dev/null && [ "${INTEROP_CERTS:-}" != python ]; then
  (
    cd "$CERTS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=presenced interop test CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    cat >server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth,clientAuth
authorityKeyIdentifier=keyid
EXT
    for name in synapse presenced; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$name.key" -out "$name.csr" 2>/dev/null
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out "$name.crt" 2>/dev/null
    done
  )
  CERT_TOOL=openssl
else
  "$VENV/bin/python" scripts/interop/make_certs.py "$CERTS" synapse presenced
  CERT_TOOL=python-cryptography
fi
phase_done "certificates($CERT_TOOL)"

# --- Ports and names ----------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
TAKEN=""
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    case " $TAKEN " in *" $p "*) continue ;; esac
    if port_free "$p"; then TAKEN="$TAKEN $p"; echo "$p"; return; fi
  done
  log "no free port"; exit 1
}
SYN_FED=$(free_port); TAKEN="$TAKEN $SYN_FED"
SYN_CLIENT=$(free_port); TAKEN="$TAKEN $SYN_CLIENT"
PD_FED=$(free_port); TAKEN="$TAKEN $PD_FED"
PD_CLIENT=$(free_port); TAKEN="$TAKEN $PD_CLIENT"
# Explicit ports in the server names: peers connect to localhost:<port>
# directly (no .well-known, no SRV) and check the certificate for localhost.
SYN_NAME="localhost:$SYN_FED"
PD_NAME="localhost:$PD_FED"
ALICE="@alice:$SYN_NAME"
BOB="@bob:$PD_NAME"

PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

SYN_DIR="$RUN/synapse"
PD_DIR="$RUN/presenced"
tails() {
  # Long-poll /sync lines would bury the federation ones.
  log "---- Synapse log (last 60 lines of $SYN_DIR/homeserver.log, /sync requests left out) ----"
  grep -v 'GET /_matrix/client/v3/sync' "$SYN_DIR/homeserver.log" 2>/dev/null | tail -60 >&2 || true
  tail -20 "$SYN_DIR/stdout.log" >&2 2>/dev/null || true
  log "---- presenced log (last 60 lines of $PD_DIR/server.log) ----"
  tail -60 "$PD_DIR/server.log" >&2 2>/dev/null || true
  if [ "$CLUSTER" = 1 ]; then
    local dir
    dir=$(sed -n 's/.*logs in \(.*\)$/\1/p' "$PD_DIR/server.log" 2>/dev/null | head -1)
    for node in "$dir"/node*.log; do
      [ -f "$node" ] || continue
      log "---- $node (last 40 lines) ----"
      tail -40 "$node" >&2 || true
    done
  fi
}
fail() { log "FAILED: $*"; tails; log "run directory kept: $RUN"; exit 1; }

wait_up() { # url pid what
  for _ in $(seq 1200); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || fail "$3 died at start-up"
    sleep 0.1
  done
  fail "$3 did not answer $1 within 120 s"
}

routes_yaml() { # indentation
  cat <<YAML | sed "s/^/$1/"
routes:
  - receiver: "$BOB"
    senders: ["$ALICE"]
  - receiver: "$ALICE"
    senders: ["$BOB"]
YAML
}

# --- Synapse --------------------------------------------------------------------
mkdir -p "$SYN_DIR"
"$VENV/bin/python" -m synapse.app.homeserver --server-name "$SYN_NAME" \
  --config-path "$SYN_DIR/homeserver.yaml" --data-directory "$SYN_DIR" \
  --generate-config --report-stats=no >/dev/null
cat >"$SYN_DIR/log.yaml" <<YAML
version: 1
formatters: {precise: {format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'}}
handlers: {file: {class: logging.FileHandler, formatter: precise, filename: $SYN_DIR/homeserver.log}}
loggers:
  synapse.federation: {level: INFO}
  synapse.crypto: {level: INFO}
  synapse.http.matrixfederationclient: {level: INFO}
  synapse.util.retryutils: {level: INFO}
  synapse.app: {level: INFO}
  synapse.access: {level: INFO}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
YAML
LIM='{per_second: 100000, burst_count: 100000}'
cat >"$SYN_DIR/interop.yaml" <<YAML
listeners:
  - port: $SYN_FED
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources: [{names: [federation], compress: false}]
  - port: $SYN_CLIENT
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    resources: [{names: [client], compress: false}]
tls_certificate_path: "$CERTS/synapse.crt"
tls_private_key_path: "$CERTS/synapse.key"
federation_verify_certificates: true
federation_custom_ca_list: ["$CERTS/ca.crt"]
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
trusted_key_servers: []
suppress_key_server_warning: true
federation:
  destination_min_retry_interval: 1s
  destination_retry_multiplier: 1.5
  destination_max_retry_interval: 5s
log_config: "$SYN_DIR/log.yaml"
registration_shared_secret: "$SYN_SECRET"
enable_registration: false
bcrypt_rounds: 4
presence: {enabled: true}
rc_message: $LIM
rc_registration: $LIM
rc_login: {address: $LIM, account: $LIM, failed_attempts: $LIM}
rc_presence: {per_user: $LIM}
rc_federation: {window_size: 1000, sleep_limit: 10000, sleep_delay: 0, reject_limit: 10000, concurrent: 100}
modules:
  - module: static_routes_router.StaticRoutes
    config:
$(routes_yaml "      ")
YAML
log "starting Synapse $SYN_NAME (client http://127.0.0.1:$SYN_CLIENT)"
PYTHONPATH="$ROOT/scripts/interop" "$VENV/bin/python" -m synapse.app.homeserver \
  -c "$SYN_DIR/homeserver.yaml" -c "$SYN_DIR/interop.yaml" >"$SYN_DIR/stdout.log" 2>&1 &
SYN_PID=$!
PIDS+=("$SYN_PID")
wait_up "http://127.0.0.1:$SYN_CLIENT/_matrix/client/versions" "$SYN_PID" Synapse
curl -sf --cacert "$CERTS/ca.crt" "https://localhost:$SYN_FED/_matrix/key/v2/server" >/dev/null ||
  fail "Synapse's key endpoint is not served over TLS with the test certificate"
phase_done start-synapse

# --- presenced ------------------------------------------------------------------
# Which TLS and federation-client keys this presenced knows: its example
# config lists every key. Without its own TLS listener, a TLS-terminating
# proxy (scripts/interop/tls_proxy.py) stands in front of a plain one.
EXAMPLE=$("$PRESENCED" generate-config)
has_key() { grep -q "^#\? *$1:" <<<"$EXAMPLE"; }
PD_TLS="${INTEROP_PRESENCED_TLS:-}"
# A cluster's nodes sit behind proxies; TLS ends in front of them.
[ "$CLUSTER" = 1 ] && PD_TLS=proxy
if [ -z "$PD_TLS" ]; then
  if has_key tls_certificate_path; then PD_TLS=native; else PD_TLS=proxy; fi
fi
mkdir -p "$PD_DIR"
PD_BACK=""
[ "$PD_TLS" = proxy ] && { PD_BACK=$(free_port); TAKEN="$TAKEN $PD_BACK"; }
{
  echo "server_name: \"$PD_NAME\""
  # A cluster node's listener and data directory come from the harness.
  if [ "$CLUSTER" = 1 ]; then :; else
  echo "listeners:"
  if [ "$PD_TLS" = native ]; then
    cat <<YAML
  - port: $PD_FED
    bind_addresses: ["127.0.0.1"]
    tls: true
    resources: [{names: [federation]}]
YAML
  else
    cat <<YAML
  - port: $PD_BACK
    bind_addresses: ["127.0.0.1"]
    resources: [{names: [federation]}]
YAML
  fi
  cat <<YAML
  - port: $PD_CLIENT
    bind_addresses: ["127.0.0.1"]
    resources: [{names: [client]}]
YAML
  echo "data_dir: \"$PD_DIR/data\""
  fi
  if [ "$PD_TLS" = native ]; then
    echo "tls_certificate_path: \"$CERTS/presenced.crt\""
    echo "tls_private_key_path: \"$CERTS/presenced.key\""
  fi
  if has_key federation_custom_ca_list; then
    echo "federation_custom_ca_list: [\"$CERTS/ca.crt\"]"
  else
    log "this presenced has no federation_custom_ca_list: it cannot reach Synapse's TLS port"
  fi
  # Both servers run on loopback, which the default ip_range_blacklist
  # blocks (as Synapse's does; Synapse's config above whitelists it too).
  if has_key ip_range_whitelist; then
    echo "ip_range_whitelist: ['127.0.0.0/8', '::1/128']"
  fi
  cat <<YAML
registration_shared_secret: "$PD_SECRET"
password_hashing: {memory_kib: 64, iterations: 1, parallelism: 1}
rc_presence: {per_user: {per_second: 100000, burst_count: 100000}}
rc_login: {address: {per_second: 100000, burst_count: 100000}, account: {per_second: 100000, burst_count: 100000}, failed_attempts: {per_second: 100000, burst_count: 100000}}
rc_registration: {per_second: 100000, burst_count: 100000}
log: {level: "info,presenced_server::federation=debug"}
YAML
  # The same Python router file Synapse loads, in Synapse's own virtualenv
  # (a presenced without Python modules uses its built-in StaticRoutes,
  # which reads the same route table).
  if has_key python_modules; then
    cat <<YAML
modules:
  - module: static_routes_router.StaticRoutes
    config:
$(routes_yaml "      ")
python_modules:
  python: "$VENV/bin/python"
  path: ["$ROOT/scripts/interop"]
YAML
  else
    cat <<YAML
modules:
  - module: presenced.routers.StaticRoutes
    config:
$(routes_yaml "      ")
YAML
  fi
} >"$PD_DIR/presenced.yaml"
if [ "$CLUSTER" = 1 ]; then
  scripts/install-nats-server >/dev/null
  log "starting presenced $PD_NAME as a 3-node cluster (random-node proxies on $PD_CLIENT and $PD_BACK)"
  "$PYTHON" tests/cluster/harness.py serve "$PD_DIR/presenced.yaml" "$PD_NAME" "$PRESENCED" \
    "$PD_CLIENT" "$PD_BACK" >"$PD_DIR/server.log" 2>&1 &
else
  log "starting presenced $PD_NAME (client http://127.0.0.1:$PD_CLIENT, federation TLS: $PD_TLS)"
  "$PRESENCED" --config "$PD_DIR/presenced.yaml" >"$PD_DIR/server.log" 2>&1 &
fi
PD_PID=$!
PIDS+=("$PD_PID")
if [ "$PD_TLS" = proxy ]; then
  "$PYTHON" scripts/interop/tls_proxy.py "$PD_FED" "$CERTS/presenced.crt" "$CERTS/presenced.key" \
    "$PD_BACK" >"$PD_DIR/tls_proxy.log" 2>&1 &
  PIDS+=("$!")
fi
wait_up "http://127.0.0.1:$PD_CLIENT/_matrix/client/versions" "$PD_PID" presenced
for _ in $(seq 100); do
  curl -sf --cacert "$CERTS/ca.crt" "https://localhost:$PD_FED/_matrix/key/v2/server" >/dev/null && break
  sleep 0.1
done
curl -sf --cacert "$CERTS/ca.crt" "https://localhost:$PD_FED/_matrix/key/v2/server" >/dev/null ||
  fail "presenced's key endpoint is not served over TLS with the test certificate"
phase_done start-presenced

# --- Presence both ways -----------------------------------------------------
"$PYTHON" scripts/interop/drive.py "http://127.0.0.1:$SYN_CLIENT" "$SYN_SECRET" \
  "http://127.0.0.1:$PD_CLIENT" "$PD_SECRET" --rounds "$ROUNDS" --deadline "$DEADLINE" \
  ${INTEROP_ONLY:+--only "$INTEROP_ONLY"} ||
  fail "presence did not cross as routed (see above)"
phase_done presence-both-ways

TOTAL=$(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "OK: Synapse $(synapse_version) <-> presenced $("$PRESENCED" --version 2>/dev/null | head -1), no shared room"
log "phases: $PHASES total=${TOTAL}s"
stop_all
[ "${INTEROP_KEEP:-0}" = 1 ] || rm -rf "$RUN"
