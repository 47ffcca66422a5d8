#!/usr/bin/env bash
# presenced against Synapse, same machine, same run (issue 5).
#
# Installs matrix-synapse from PyPI into a virtualenv under target/, builds
# presenced and presenced-bench in release, then for workloads 1 (rooms)
# and 2 (observers) starts each server fresh on loopback (Synapse first,
# then presenced; only one runs at a time), runs `presenced-bench
# --find-max` against it, and writes the comparison table into
# BENCHMARKS.md (between the bench-vs-synapse markers). Raw JSON lines stay
# in target/bench-vs-synapse/.
#
# Environment: SYNAPSE_VERSION (default 1.163.2), BENCH_DURATION (seconds
# per step, default 10), BENCH_W1_RATE / BENCH_W2_RATE (first rate of the
# search and the rate both servers are compared at, default 50 / 10),
# BENCH_WORKLOADS (default "rooms observers"), BENCH_PYTHON_ROUTER (default 1:
# workload 2 also runs presenced with Synapse's Python router file),
# BENCH_DATABASE (default "sqlite"; "postgres" runs both servers on
# PostgreSQL, Synapse's recommended production setup, each on a fresh
# database of the machine's server at BENCH_POSTGRES, default
# postgres://postgres@127.0.0.1:5432/postgres; "sqlite postgres" runs both
# modes in one go). The PostgreSQL mode also reports the CPU of the whole
# PostgreSQL cluster (postmaster and backends) per update, and writes its
# own table between the bench-vs-synapse-postgres markers.
#
# Companion mode (issue 27): workload 1 also runs "companion", Synapse with
# its presence off and presenced in front of it (`synapse:` config, the
# appservice registration, everything through presenced's port), with the
# CPU of both processes per update, Synapse's /sync requests per presence
# wake-up (its metrics listener) and the latency presenced adds to a
# forwarded request (tests/companion/forwarding_latency.py); its table goes
# between the bench-vs-synapse-companion markers. BENCH_COMPANION=0 skips
# it; BENCH_SERVERS (default: all) limits the servers run, e.g.
# `BENCH_WORKLOADS=rooms BENCH_SERVERS="synapse companion"` for the
# companion comparison alone.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET="${CARGO_TARGET_DIR:-target}"
SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
DURATION="${BENCH_DURATION:-10}"
W1_RATE="${BENCH_W1_RATE:-50}"
W2_RATE="${BENCH_W2_RATE:-10}"
WORKLOADS="${BENCH_WORKLOADS:-rooms observers}"
DATABASES="${BENCH_DATABASE:-sqlite}"
PG_ADMIN="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
MONITORS=10
SECRET="bench-vs-synapse-secret"
OUT="$ROOT/target/bench-vs-synapse"
VENV="$ROOT/target/synapse-venv"
mkdir -p "$OUT"

log() { echo "bench-vs-synapse: $*" >&2; }

# --- Synapse in a virtualenv -------------------------------------------------
synapse_version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null; }
if [ "$(synapse_version)" != "$SYNAPSE_VERSION" ]; then
  log "installing matrix-synapse==$SYNAPSE_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "matrix-synapse==$SYNAPSE_VERSION"
fi
# Synapse's PostgreSQL driver (its `postgres` extra), built against the
# machine's libpq.
if [[ " $DATABASES " == *" postgres "* ]] && ! "$VENV/bin/python" -c 'import psycopg2' 2>/dev/null; then
  log "installing matrix-synapse[postgres]==$SYNAPSE_VERSION"
  "$VENV/bin/pip" install -q "matrix-synapse[postgres]==$SYNAPSE_VERSION"
fi
SYNAPSE_ACTUAL=$(synapse_version)

# --- PostgreSQL: a fresh database per server run -----------------------------
PG_HOSTPORT="${PG_ADMIN#*@}"; PG_HOSTPORT="${PG_HOSTPORT%%/*}"
PG_HOST="${PG_HOSTPORT%%:*}"; PG_PORT="${PG_HOSTPORT##*:}"
[ "$PG_PORT" = "$PG_HOSTPORT" ] && PG_PORT=5432
PG_USER="${PG_ADMIN#*://}"; PG_USER="${PG_USER%%@*}"; PG_USER="${PG_USER%%:*}"
pg() { psql "$PG_ADMIN" -qAt -v ON_ERROR_STOP=1 -c "$1"; }
pg_fresh() { # name: a new database with the C collation Synapse requires
  pg "DROP DATABASE IF EXISTS $1 WITH (FORCE)"
  pg "CREATE DATABASE $1 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
}
pg_block() { # name: the database block both servers take (Synapse's shape)
  cat <<YAML
database:
  name: psycopg2
  args: {user: $PG_USER, dbname: $1, host: $PG_HOST, port: $PG_PORT, cp_min: 5, cp_max: 10}
YAML
}
# The postmaster: its process tree is the whole cluster's CPU.
postmaster_pid() {
  local dir
  dir=$(pg "SHOW data_directory")
  head -1 "$dir/postmaster.pid" 2>/dev/null || pgrep -o -u postgres postgres
}

log "building presenced and presenced-bench (release)"
cargo build --release -q -p presenced-server -p presenced-bench --bins
PRESENCED="$TARGET/release/presenced"
BENCH="$TARGET/release/presenced-bench"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  log "no free port"; exit 1
}

SERVER_PID=""
UPSTREAM_PID="" # companion mode: Synapse behind presenced (SERVER_PID)
stop_server() {
  local pid
  for pid in $SERVER_PID $UPSTREAM_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PID="" UPSTREAM_PID=""
}
trap stop_server EXIT

wait_up() { # port logfile
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$1/_matrix/client/versions" >/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -50 "$2" >&2; log "server died"; exit 1; }
    sleep 0.1
  done
  log "server did not come up"; exit 1
}

monitor_list() { # server_name
  local i sep=""
  for i in $(seq 0 $((MONITORS - 1))); do printf '%s"@monitor%s:%s"' "$sep" "$i" "$1"; sep=", "; done
}

# The Synapse presence router equivalent to presenced.routers.Observers:
# the listed users receive every update and see everyone.
ROUTER_DIR="$OUT/pymodules"
mkdir -p "$ROUTER_DIR"
cat >"$ROUTER_DIR/bench_observers_router.py" <<'PY'
"""Presence router for the benchmark: the users in `observers` receive
every presence update and are interested in all users (the behaviour of
presenced.routers.Observers)."""

from synapse.module_api import PRESENCE_ALL_USERS


class ObserversRouter:
    def __init__(self, config, api):
        self._observers = frozenset(config.get("observers", []))
        api.register_presence_router_callbacks(
            get_users_for_states=self.get_users_for_states,
            get_interested_users=self.get_interested_users,
        )

    @staticmethod
    def parse_config(config):
        return config

    async def get_users_for_states(self, state_updates):
        # Every observer gets an entry, even for no updates: Synapse's sync
        # looks the syncing user up in this answer.
        updates = set(state_updates)
        return {observer: set(updates) for observer in self._observers}

    async def get_interested_users(self, user_id):
        if user_id in self._observers:
            return PRESENCE_ALL_USERS
        return set()
PY

start_synapse() { # workload port dir [postgres-database]
  local w=$1 port=$2 dir=$3 db=${4:-}
  rm -rf "$dir"; mkdir -p "$dir"
  "$VENV/bin/python" -m synapse.app.homeserver --server-name localhost \
    --config-path "$dir/homeserver.yaml" --data-directory "$dir" \
    --generate-config --report-stats=no >/dev/null
  cat >"$dir/log.yaml" <<YAML
version: 1
formatters: {precise: {format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'}}
handlers: {file: {class: logging.FileHandler, formatter: precise, filename: $dir/homeserver.log}}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
YAML
  local lim='{per_second: 100000, burst_count: 100000}'
  cat >"$dir/bench.yaml" <<YAML
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources: [{names: [client], compress: false}]
${SYNAPSE_LISTENERS:-}
log_config: "$dir/log.yaml"
registration_shared_secret: "$SECRET"
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
bcrypt_rounds: 4
presence: {enabled: ${SYNAPSE_PRESENCE:-true}}
rc_message: $lim
rc_registration: $lim
rc_login: {address: $lim, account: $lim, failed_attempts: $lim}
rc_joins: {local: $lim, remote: $lim}
rc_joins_per_room: $lim
rc_invites: {per_room: $lim, per_user: $lim, per_issuer: $lim}
rc_room_creation: $lim
rc_presence: {per_user: $lim}
rc_delayed_event_mgmt: $lim
YAML
  [ -n "$db" ] && pg_block "$db" >>"$dir/bench.yaml"
  [ -n "${SYNAPSE_EXTRA:-}" ] && echo "$SYNAPSE_EXTRA" >>"$dir/bench.yaml"
  if [ "$w" = observers ]; then
    cat >>"$dir/bench.yaml" <<YAML
modules:
  - module: bench_observers_router.ObserversRouter
    config:
      observers: [$(monitor_list localhost)]
YAML
  fi
  PYTHONPATH="$ROUTER_DIR" "$VENV/bin/python" -m synapse.app.homeserver \
    -c "$dir/homeserver.yaml" -c "$dir/bench.yaml" >"$dir/stdout.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$port" "$dir/homeserver.log"
}

start_presenced() { # workload port dir [python] [postgres-database]
  local w=$1 port=$2 dir=$3 db=${5:-}
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/presenced.yaml" <<YAML
server_name: "localhost"
listeners:
  - port: $port
    bind_addresses: ["127.0.0.1"]
data_dir: "$dir/data"
registration_shared_secret: "$SECRET"
password_hashing: {memory_kib: 64, iterations: 1, parallelism: 1}
rc_presence: {per_user: {per_second: 100000, burst_count: 100000}}
rc_login: {address: {per_second: 100000, burst_count: 100000}, account: {per_second: 100000, burst_count: 100000}, failed_attempts: {per_second: 100000, burst_count: 100000}}
rc_registration: {per_second: 100000, burst_count: 100000}
log: {level: warn}
YAML
  [ -n "$db" ] && pg_block "$db" >>"$dir/presenced.yaml"
  if [ "$w" = observers ] && [ "${4:-}" = python ]; then
    # The same Python router file Synapse loads, in Synapse's virtualenv.
    cat >>"$dir/presenced.yaml" <<YAML
modules:
  - module: bench_observers_router.ObserversRouter
    config:
      observers: [$(monitor_list localhost)]
python_modules:
  python: "$VENV/bin/python"
  path: ["$ROUTER_DIR"]
YAML
  elif [ "$w" = observers ]; then
    cat >>"$dir/presenced.yaml" <<YAML
modules:
  - module: presenced.routers.Observers
    config:
      observers: [$(monitor_list localhost)]
YAML
  fi
  "$PRESENCED" --config "$dir/presenced.yaml" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$port" "$dir/server.log"
}

# Companion mode: Synapse (presence off, the registration loaded, a
# metrics listener) on a port of its own, then presenced in front on
# `port` with a `synapse:` section. Sets SERVER_PID (presenced),
# UPSTREAM_PID (Synapse), UPSTREAM_URL, UPSTREAM_METRICS and USER_TOKEN
# (an account registered through presenced, for the forwarding latency).
start_companion() { # workload port dir
  local w=$1 port=$2 dir=$3 syn_port met_port admin
  rm -rf "$dir"; mkdir -p "$dir"
  syn_port=$(free_port)
  while [ "$syn_port" = "$port" ]; do syn_port=$(free_port); done
  met_port=$(free_port)
  while [ "$met_port" = "$syn_port" ] || [ "$met_port" = "$port" ]; do met_port=$(free_port); done
  "$PRESENCED" generate-appservice --url "http://127.0.0.1:$port" --output "$dir/appservice.yaml"
  SYNAPSE_PRESENCE=false \
    SYNAPSE_LISTENERS="  - {port: $met_port, bind_addresses: ['127.0.0.1'], type: metrics}" \
    SYNAPSE_EXTRA="app_service_config_files: [\"$dir/appservice.yaml\"]
enable_metrics: true" \
    start_synapse "$w" "$syn_port" "$dir/synapse"
  UPSTREAM_PID=$SERVER_PID SERVER_PID=""
  UPSTREAM_URL="http://127.0.0.1:$syn_port"
  UPSTREAM_METRICS="http://127.0.0.1:$met_port/_synapse/metrics"
  admin=$("$VENV/bin/python" tests/companion/register.py "$UPSTREAM_URL" benchadmin admin "$SECRET")
  cat >"$dir/presenced.yaml" <<YAML
server_name: "localhost"
listeners:
  - port: $port
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    resources: [{names: [client, federation]}]
data_dir: "$dir/data"
signing_key_path: "$dir/synapse/localhost.signing.key"
enable_metrics: true
rc_presence: {per_user: {per_second: 100000, burst_count: 100000}}
log: {level: warn}
synapse:
  url: "$UPSTREAM_URL"
  appservice_registration: "$dir/appservice.yaml"
  admin_token: "$admin"
YAML
  "$PRESENCED" --config "$dir/presenced.yaml" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$port" "$dir/server.log"
  USER_TOKEN=$("$VENV/bin/python" tests/companion/register.py "http://127.0.0.1:$port" latency user "$SECRET")
}

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
for database in $DATABASES; do
for w in $WORKLOADS; do
  rate=$W1_RATE
  [ "$w" = observers ] && rate=$W2_RATE
  servers="synapse presenced"
  # Workload 2 once more with the Python router file on presenced too
  # (BENCH_PYTHON_ROUTER=0 skips it; SQLite mode only).
  [ "$database" = sqlite ] && [ "$w" = observers ] && [ "${BENCH_PYTHON_ROUTER:-1}" = 1 ] &&
    servers="$servers presenced-py"
  # Workload 1 once more in companion mode (SQLite mode only).
  [ "$database" = sqlite ] && [ "$w" = rooms ] && [ "${BENCH_COMPANION:-1}" = 1 ] &&
    servers="$servers companion"
  for server in $servers; do
    [ -z "${BENCH_SERVERS:-}" ] || [[ " $BENCH_SERVERS " == *" $server "* ]] || continue
    port=$(free_port)
    label=$server db="" db_args=()
    if [ "$database" = postgres ]; then
      label="$server-pg" db="bench_${server//-/_}_$w"
      pg_fresh "$db"
      db_args=(--db-pid "$(postmaster_pid)")
    fi
    dir="$OUT/$label-$w"
    log "$w: starting $label on 127.0.0.1:$port"
    case $server in
      presenced-py) start_presenced "$w" "$port" "$dir" python "$db" ;;
      presenced) start_presenced "$w" "$port" "$dir" "" "$db" ;;
      synapse) start_synapse "$w" "$port" "$dir" "$db" ;;
      companion)
        start_companion "$w" "$port" "$dir"
        # Both processes' CPU, presenced's wake-ups, Synapse's /syncs.
        db_args=(--server-pid "$UPSTREAM_PID" --metrics --synapse-metrics "$UPSTREAM_METRICS")
        ;;
    esac
    "$BENCH" --base-url "http://127.0.0.1:$port" --shared-secret "$SECRET" \
      --workload "$w" --rate "$rate" --find-max --duration "$DURATION" \
      --server-pid "$SERVER_PID" "${db_args[@]}" --label "$label" --json | tee -a "$RESULTS" ||
      log "$w: the run against $label failed (see $dir)"
    if [ "$server" = companion ]; then
      "$VENV/bin/python" tests/companion/forwarding_latency.py "http://127.0.0.1:$port" \
        "$UPSTREAM_URL" "$USER_TOKEN" 1000 20 --json companion | tee -a "$RESULTS" ||
        log "the forwarding latency run failed (see $dir)"
    fi
    stop_server
    [ -n "$db" ] && pg "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  done
done
done

# --- The table ---------------------------------------------------------------
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
PRESENCED_VERSION="$("$PRESENCED" --version) ($(git rev-parse --short HEAD))"
PG_VERSION=$(pg "SHOW server_version" 2>/dev/null || echo "?")
python3 - "$RESULTS" "$ROOT/BENCHMARKS.md" "$SYNAPSE_ACTUAL" "$PRESENCED_VERSION" \
  "$(nproc)" "$CPU_MODEL" "$DURATION" "$PG_VERSION" <<'PY'
import datetime, json, sys

results, md, syn_ver, pd_ver, nproc, cpu, duration, pg_ver = sys.argv[1:9]
steps, maxes, forwarding = {}, {}, {}
for line in open(results):
    r = json.loads(line)
    if r.get("kind") == "forwarding":
        forwarding[r["request"]] = r
        continue
    key = (r["label"], r["workload"])
    if r.get("kind") == "find_max":
        maxes[key] = r
    else:
        steps.setdefault(key, []).append(r)

def fmt(x, d=1):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{d}f}" if d else f"{x:.0f}"

def ratio(p, s):
    if p is None or s is None or s == 0:
        return "–"
    r = p / s
    return f"{r:,.0f}×" if r >= 10 else f"{r:.3g}×"

lines = []
for w in ["rooms", "observers"]:
    if ("presenced", w) not in steps or ("synapse", w) not in steps:
        continue
    ps, ss = steps[("presenced", w)], steps[("synapse", w)]
    pm, sm = maxes.get(("presenced", w), {}), maxes.get(("synapse", w), {})
    p0, s0 = ps[0], ss[0]
    rate = p0["target_put_per_s"]
    title = {"rooms": "Workload 1 (rooms: 200 users in rooms of 10, 20 observers)",
             "observers": "Workload 2 (observers: workload 1 + 10 routed monitors)"}[w]
    lines += [f"**{title}**", "",
              "| figure | presenced | Synapse | presenced/Synapse |",
              "|---|---:|---:|---:|"]
    def row(name, p, s, d=1):
        lines.append(f"| {name} | {fmt(p, d)} | {fmt(s, d)} | {ratio(p, s)} |")
    row("highest sustained PUT/s, PUT→sync p99 ≤ 1 s", pm.get("max_put_per_s_p99_1s"), sm.get("max_put_per_s_p99_1s"), 0)
    row("highest sustained PUT/s, PUT→sync p99 ≤ 10 ms", pm.get("max_put_per_s_p99_10ms"), sm.get("max_put_per_s_p99_10ms"), 0)
    row(f"server CPU ms per update at {rate:.0f} PUT/s", p0["server_cpu_ms_per_update"], s0["server_cpu_ms_per_update"], 3)
    row(f"accepted PUT/s at {rate:.0f} PUT/s", p0["accepted_put_per_s"], s0["accepted_put_per_s"])
    row(f"PUT latency p50 ms at {rate:.0f} PUT/s", p0["put_p50_ms"], s0["put_p50_ms"], 2)
    row(f"PUT latency p99 ms at {rate:.0f} PUT/s", p0["put_p99_ms"], s0["put_p99_ms"], 2)
    row(f"PUT→sync p50 ms at {rate:.0f} PUT/s", p0["delivery_p50_ms"], s0["delivery_p50_ms"], 2)
    row(f"PUT→sync p99 ms at {rate:.0f} PUT/s", p0["delivery_p99_ms"], s0["delivery_p99_ms"], 2)
    row(f"PUT→sync max ms at {rate:.0f} PUT/s", p0["delivery_max_ms"], s0["delivery_max_ms"], 2)
    lines.append(f"| deliveries seen/expected at {rate:.0f} PUT/s | {p0['deliveries_seen']}/{p0['deliveries_expected']} | {s0['deliveries_seen']}/{s0['deliveries_expected']} | |")
    row("peak RSS MiB (whole run)", max(r["server_peak_rss_mib"] or 0 for r in ps), max(r["server_peak_rss_mib"] or 0 for r in ss))
    def at(steps_, target):
        return next((r for r in steps_ if r["target_put_per_s"] == target), None)
    pmax = pm.get("max_put_per_s_p99_1s")
    smax = sm.get("max_put_per_s_p99_1s")
    pr, sr = at(ps, pmax), at(ss, smax)
    if pr and sr:
        row("server CPU ms per update, each at its highest sustained rate (1 s)", pr["server_cpu_ms_per_update"], sr["server_cpu_ms_per_update"], 3)
        row("PUT→sync p99 ms, each at its highest sustained rate (1 s)", pr["delivery_p99_ms"], sr["delivery_p99_ms"], 2)
    lines.append("")
    lines += ["<details><summary>every step</summary>", "",
              "| server | target PUT/s | accepted PUT/s | errors | 429 | queued | dropped | PUT p50/p99 ms | PUT→sync p50/p99/max ms | seen/expected | CPU ms/update | server CPU % | peak RSS MiB | tool CPU % | load avg |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in ss + ps:
        lines.append(
            f"| {r['label']} | {r['target_put_per_s']:.0f} | {r['accepted_put_per_s']:.1f} | {r['errors']} | {r['rate_limited']} | {r['queued']} | {r['dropped']} "
            f"| {r['put_p50_ms']:.1f} / {r['put_p99_ms']:.1f} | {r['delivery_p50_ms']:.1f} / {r['delivery_p99_ms']:.1f} / {r['delivery_max_ms']:.1f} "
            f"| {r['deliveries_seen']}/{r['deliveries_expected']} | {fmt(r['server_cpu_ms_per_update'], 3)} | {fmt(r['server_cpu_percent'], 0)} "
            f"| {fmt(r['server_peak_rss_mib'])} | {fmt(r['client_cpu_percent'], 0)} | {fmt(r.get('load_avg_1m'), 2)} |")
    lines += ["", "</details>", ""]

py = maxes.get(("presenced-py", "observers"))
if py:
    sm = maxes.get(("synapse", "observers"), {})
    pm = maxes.get(("presenced", "observers"), {})
    lines += ["**Workload 2 with the same Python router file on both servers** "
              "(`bench_observers_router.ObserversRouter`, in presenced's Python module host)", "",
              "| figure | presenced, Python router | Synapse | presenced, built-in Observers | vs Synapse | vs built-in |",
              "|---|---:|---:|---:|---:|---:|"]
    for key, name in [("max_put_per_s_p99_1s", "highest sustained PUT/s, PUT→sync p99 ≤ 1 s"),
                      ("max_put_per_s_p99_10ms", "highest sustained PUT/s, PUT→sync p99 ≤ 10 ms")]:
        a, s_, b = py.get(key), sm.get(key), pm.get(key)
        lines.append(f"| {name} | {fmt(a, 0)} | {fmt(s_, 0)} | {fmt(b, 0)} | {ratio(a, s_)} | {ratio(a, b)} |")
    first = steps.get(("presenced-py", "observers"), [None])[0]
    if first:
        lines.append(f"| server CPU ms per update at {first['target_put_per_s']:.0f} PUT/s | {fmt(first['server_cpu_ms_per_update'], 3)} | | | | |")
    lines.append("")

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

def write_block(name, block):
    start, end = f"<!-- {name}:start", f"<!-- {name}:end -->"
    text = open(md).read() if __import__("os").path.exists(md) else ""
    if start in text and end in text:
        head = text[: text.index(start)]
        tail = text[text.index(end) + len(end):]
        text = head + "\n".join(block) + tail
    else:
        text = text + ("\n" if text else "") + "\n".join(block) + "\n"
    open(md, "w").write(text)
    print("\n".join(block))

if lines:
    write_block("bench-vs-synapse", [
        "<!-- bench-vs-synapse:start (written by scripts/bench-vs-synapse.sh) -->",
        f"Run of {now}: {nproc} cores ({cpu}), presenced {pd_ver}, Synapse {syn_ver} "
        f"(SQLite, Python {sys.version.split()[0]}), {duration} s per step.",
        "",
    ] + lines + ["<!-- bench-vs-synapse:end -->"])

# --- Companion mode: Synapse presence off + presenced in front ----------------
co_lines = []
if ("companion", "rooms") in steps and ("synapse", "rooms") in steps:
    cs, ss = steps[("companion", "rooms")], steps[("synapse", "rooms")]
    cm, sm = maxes.get(("companion", "rooms"), {}), maxes.get(("synapse", "rooms"), {})
    c0, s0 = cs[0], ss[0]
    rate = c0["target_put_per_s"]
    co_lines += ["**Workload 1 (rooms) through the front door: Synapse with presence off and "
                 "presenced in front (companion mode) vs Synapse with presence on**", "",
                 "| figure | Synapse + presenced | Synapse alone | ratio |",
                 "|---|---:|---:|---:|"]
    def row(name, c, s_, d=1):
        co_lines.append(f"| {name} | {fmt(c, d)} | {fmt(s_, d)} | {ratio(c, s_)} |")
    row("highest sustained PUT/s, PUT→sync p99 ≤ 1 s", cm.get("max_put_per_s_p99_1s"), sm.get("max_put_per_s_p99_1s"), 0)
    row("highest sustained PUT/s, PUT→sync p99 ≤ 10 ms", cm.get("max_put_per_s_p99_10ms"), sm.get("max_put_per_s_p99_10ms"), 0)
    row(f"CPU ms per update, all processes, at {rate:.0f} PUT/s", c0["server_cpu_ms_per_update"], s0["server_cpu_ms_per_update"], 3)
    row(f"PUT→sync p50 ms at {rate:.0f} PUT/s", c0["delivery_p50_ms"], s0["delivery_p50_ms"], 2)
    row(f"PUT→sync p99 ms at {rate:.0f} PUT/s", c0["delivery_p99_ms"], s0["delivery_p99_ms"], 2)
    def at(steps_, target):
        return next((r for r in steps_ if r["target_put_per_s"] == target), None)
    cr, sr = at(cs, cm.get("max_put_per_s_p99_1s")), at(ss, sm.get("max_put_per_s_p99_1s"))
    if cr and sr:
        row("CPU ms per update, all processes, each at its highest sustained rate (1 s)", cr["server_cpu_ms_per_update"], sr["server_cpu_ms_per_update"], 3)
        row("PUT→sync p99 ms, each at its highest sustained rate (1 s)", cr["delivery_p99_ms"], sr["delivery_p99_ms"], 2)
        both = cr.get("node_cpu_ms")
        if both and len(both) == 2 and sum(both) > 0:
            co_lines.append(f"| share of that CPU: presenced / Synapse | {100 * both[0] / sum(both):.0f} % / {100 * both[1] / sum(both):.0f} % | | |")
    wakes = sum(sum(r.get("node_wakes") or [0]) for r in cs)
    upstream = sum(r.get("synapse_syncs") or 0 for r in cs)
    per = f"{upstream / wakes:.4f}" if wakes else "–"
    co_lines.append(f"| Synapse /sync requests per presence wake-up (all steps: {upstream:,} / {wakes:,}) | {per} | | |")
    co_lines.append(f"| deliveries seen/expected at {rate:.0f} PUT/s | {c0['deliveries_seen']}/{c0['deliveries_expected']} | {s0['deliveries_seen']}/{s0['deliveries_expected']} | |")
    co_lines.append("")
    if forwarding:
        first = next(iter(forwarding.values()))
        co_lines += ["**The latency presenced adds to a request it forwards** "
                     f"(interleaved, {first['rounds']} of each, one kept-alive connection each, "
                     f"{first.get('pause_ms', 0):.0f} ms between requests so that the application-service "
                     "push a message send causes is over before the next request)", "",
                     "| request | straight to Synapse p50 / p99 ms | through presenced p50 / p99 ms | added p50 / p99 ms |",
                     "|---|---:|---:|---:|"]
        for name, f in forwarding.items():
            co_lines.append(f"| {name} | {f['direct_p50_ms']:.2f} / {f['direct_p99_ms']:.2f} | {f['through_p50_ms']:.2f} / {f['through_p99_ms']:.2f} "
                            f"| {f['through_p50_ms'] - f['direct_p50_ms']:.2f} / {f['through_p99_ms'] - f['direct_p99_ms']:.2f} |")
        co_lines.append("")
    co_lines += ["<details><summary>every companion step</summary>", "",
                 "| target PUT/s | accepted PUT/s | errors | PUT p50/p99 ms | PUT→sync p50/p99/max ms | seen/expected | CPU ms/update (both) | presenced / Synapse CPU ms | wake-ups | Synapse /syncs |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in cs:
        node = r.get("node_cpu_ms") or []
        split = " / ".join(f"{x:,.0f}" for x in node) if node else "–"
        co_lines.append(
            f"| {r['target_put_per_s']:.0f} | {r['accepted_put_per_s']:.1f} | {r['errors']} "
            f"| {r['put_p50_ms']:.1f} / {r['put_p99_ms']:.1f} | {r['delivery_p50_ms']:.1f} / {r['delivery_p99_ms']:.1f} / {r['delivery_max_ms']:.1f} "
            f"| {r['deliveries_seen']}/{r['deliveries_expected']} | {fmt(r['server_cpu_ms_per_update'], 3)} | {split} "
            f"| {sum(r.get('node_wakes') or [0]):,} | {fmt(r.get('synapse_syncs'), 0)} |")
    co_lines += ["", "</details>", ""]

if co_lines:
    write_block("bench-vs-synapse-companion", [
        "<!-- bench-vs-synapse-companion:start (written by scripts/bench-vs-synapse.sh) -->",
        f"Run of {now}: {nproc} cores ({cpu}), presenced {pd_ver}, Synapse {syn_ver} "
        f"(SQLite, Python {sys.version.split()[0]}), {duration} s per step. Both sides are measured "
        "through the port clients use; the companion's CPU is presenced's and Synapse's together.",
        "",
    ] + co_lines + ["<!-- bench-vs-synapse-companion:end -->"])

# --- PostgreSQL mode: both servers on PostgreSQL -----------------------------
pg_lines = []
for w in ["rooms", "observers"]:
    if ("presenced-pg", w) not in steps or ("synapse-pg", w) not in steps:
        continue
    ps, ss = steps[("presenced-pg", w)], steps[("synapse-pg", w)]
    pm, sm = maxes.get(("presenced-pg", w), {}), maxes.get(("synapse-pg", w), {})
    lite = maxes.get(("presenced", w), {})
    title = {"rooms": "Workload 1 on PostgreSQL (rooms)",
             "observers": "Workload 2 on PostgreSQL (observers: 10 routed monitors)"}[w]
    pg_lines += [f"**{title}**", "",
                 "| figure | presenced | Synapse | presenced/Synapse |",
                 "|---|---:|---:|---:|"]
    def row(name, p, s_, d=1):
        pg_lines.append(f"| {name} | {fmt(p, d)} | {fmt(s_, d)} | {ratio(p, s_)} |")
    row("highest sustained PUT/s, PUT→sync p99 ≤ 1 s", pm.get("max_put_per_s_p99_1s"), sm.get("max_put_per_s_p99_1s"), 0)
    row("highest sustained PUT/s, PUT→sync p99 ≤ 10 ms", pm.get("max_put_per_s_p99_10ms"), sm.get("max_put_per_s_p99_10ms"), 0)
    p0, s0 = ps[0], ss[0]
    rate = p0["target_put_per_s"]
    row(f"server CPU ms per update at {rate:.0f} PUT/s", p0["server_cpu_ms_per_update"], s0["server_cpu_ms_per_update"], 3)
    row(f"PostgreSQL CPU ms per update at {rate:.0f} PUT/s", p0.get("db_cpu_ms_per_update"), s0.get("db_cpu_ms_per_update"), 3)
    pg_lines.append(f"| PUT latency p50 / p99 ms at {rate:.0f} PUT/s | {p0['put_p50_ms']:.2f} / {p0['put_p99_ms']:.2f} "
                    f"| {s0['put_p50_ms']:.2f} / {s0['put_p99_ms']:.2f} | |")
    row(f"PUT→sync p99 ms at {rate:.0f} PUT/s", p0["delivery_p99_ms"], s0["delivery_p99_ms"], 2)
    def at(steps_, target):
        return next((r for r in steps_ if r["target_put_per_s"] == target), None)
    pr, sr = at(ps, pm.get("max_put_per_s_p99_1s")), at(ss, sm.get("max_put_per_s_p99_1s"))
    if pr and sr:
        row("server CPU ms per update, each at its highest sustained rate (1 s)", pr["server_cpu_ms_per_update"], sr["server_cpu_ms_per_update"], 3)
        row("PostgreSQL CPU ms per update, each at its highest sustained rate (1 s)", pr.get("db_cpu_ms_per_update"), sr.get("db_cpu_ms_per_update"), 3)
        row("PostgreSQL CPU %, each at its highest sustained rate (1 s)", pr.get("db_cpu_percent"), sr.get("db_cpu_percent"), 0)
    a, b = pm.get("max_put_per_s_p99_1s"), lite.get("max_put_per_s_p99_1s")
    share = f"{100 * a / b:.0f} %" if a and b else "–"
    pg_lines.append(f"| presenced on PostgreSQL / on SQLite (same run, highest sustained, 1 s) | {fmt(a, 0)} / {fmt(b, 0)} = {share} | | |")
    pg_lines.append("")
    pg_lines += ["<details><summary>every step</summary>", "",
                 "| server | target PUT/s | accepted PUT/s | errors | PUT p50/p99 ms | PUT→sync p50/p99/max ms | seen/expected | server CPU ms/update | PostgreSQL CPU ms/update | server CPU % | PostgreSQL CPU % |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in ss + ps:
        pg_lines.append(
            f"| {r['label']} | {r['target_put_per_s']:.0f} | {r['accepted_put_per_s']:.1f} | {r['errors']} "
            f"| {r['put_p50_ms']:.1f} / {r['put_p99_ms']:.1f} | {r['delivery_p50_ms']:.1f} / {r['delivery_p99_ms']:.1f} / {r['delivery_max_ms']:.1f} "
            f"| {r['deliveries_seen']}/{r['deliveries_expected']} | {fmt(r['server_cpu_ms_per_update'], 3)} | {fmt(r.get('db_cpu_ms_per_update'), 3)} "
            f"| {fmt(r['server_cpu_percent'], 0)} | {fmt(r.get('db_cpu_percent'), 0)} |")
    pg_lines += ["", "</details>", ""]

if pg_lines:
    write_block("bench-vs-synapse-postgres", [
        "<!-- bench-vs-synapse-postgres:start (written by scripts/bench-vs-synapse.sh) -->",
        f"Run of {now}: {nproc} cores ({cpu}), presenced {pd_ver}, Synapse {syn_ver} "
        f"(PostgreSQL {pg_ver}, psycopg2, Python {sys.version.split()[0]}), {duration} s per step.",
        "",
    ] + pg_lines + ["<!-- bench-vs-synapse-postgres:end -->"])
PY
log "table written to BENCHMARKS.md; raw results in $RESULTS"
