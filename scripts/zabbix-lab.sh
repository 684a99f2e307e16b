#!/usr/bin/env bash
# Zabbix 6.0 lab on loopback (Debian 12 packages), for Concierge's integration tests.
#
#   scripts/zabbix-lab.sh up       install what is missing, start everything, create group/host (idempotent)
#   scripts/zabbix-lab.sh down     stop every lab daemon (idempotent)
#   scripts/zabbix-lab.sh status   one line per component; exit 0 only if all are up
#   scripts/zabbix-lab.sh reset    restore the pristine database, restart the server, redo the API setup
#   scripts/zabbix-lab.sh server-stop / server-start   only the Zabbix server (outage tests)
#
# Needs root on Debian 12. No systemd: every daemon is started by hand. Everything listens on 127.0.0.1.
# Environment: ZLAB_AGENT=1 (default) also runs zabbix_agentd on 127.0.0.1:10050; ZLAB_AGENT=0 skips it.
# Recipe and measurements: shared/docs/zabbix-lab.md.
set -euo pipefail
export LC_ALL=C

# ---- constants ------------------------------------------------------------------------------------
readonly LAB_ADDR=127.0.0.1
readonly TRAPPER_PORT=10051
readonly AGENT_PORT=10050
readonly HTTP_PORT=8088
readonly PG_VERSION=15
readonly PG_CLUSTER=main
readonly PG_PORT=5432
readonly DB_NAME=zabbix
readonly DB_USER=zabbix
readonly DB_PASSWORD=zabbix
readonly DB_PRISTINE=zabbix_pristine
readonly DB_IMPORTING=zabbix_importing
readonly API_USER=Admin
readonly API_PASSWORD=zabbix
readonly LAB_GROUP=Concierge
readonly LAB_HOST=concierge-lab
readonly STOCK_HOST="Zabbix server"
readonly API_URL="http://${LAB_ADDR}:${HTTP_PORT}/api_jsonrpc.php"

readonly PACKAGES=(postgresql zabbix-server-pgsql zabbix-frontend-php php-pgsql php-fpm nginx zabbix-agent curl python3)
readonly POLICY_RC=/usr/sbin/policy-rc.d
readonly SCHEMA_DIR=/usr/share/zabbix-server-pgsql
readonly FRONTEND_ROOT=/usr/share/zabbix
readonly PYTHON=/usr/bin/python3

readonly SERVER_BIN=/usr/sbin/zabbix_server
readonly SERVER_CONF=/etc/zabbix/zabbix_server.conf
readonly SERVER_CONF_D=/etc/zabbix/zabbix_server.conf.d
readonly SERVER_LAB_CONF=${SERVER_CONF_D}/concierge-lab.conf
readonly SERVER_PID=/run/zabbix/zabbix_server.pid
readonly SERVER_LOG=/var/log/zabbix-server/zabbix_server.log
readonly AGENT_BIN=/usr/sbin/zabbix_agentd
readonly AGENT_CONF=/etc/zabbix/zabbix_agentd.conf
readonly AGENT_CONF_D=/etc/zabbix/zabbix_agentd.conf.d
readonly AGENT_LAB_CONF=${AGENT_CONF_D}/concierge-lab.conf
readonly AGENT_PID=/run/zabbix/zabbix_agentd.pid
readonly SENDER_BIN=/usr/bin/zabbix_sender
readonly RUN_ZABBIX=/run/zabbix

readonly FRONTEND_CONF=/etc/zabbix/zabbix.conf.php
readonly PHP_FPM_BIN=/usr/sbin/php-fpm8.2
readonly PHP_FPM_PID=/run/php/php8.2-fpm.pid
readonly PHP_FPM_SOCK=/run/php/php8.2-fpm.sock
readonly RUN_PHP=/run/php
readonly LAB_ETC=/etc/concierge-lab
readonly SCALE_STATE_DIR=/var/lib/concierge
readonly NGINX_CONF=${LAB_ETC}/nginx.conf
readonly NGINX_PID=/run/concierge-lab-nginx.pid
readonly NGINX_LOG_DIR=/var/log/nginx

readonly STOP_TIMEOUT=30     # seconds to wait for a daemon to exit after SIGTERM
readonly READY_TIMEOUT=60    # seconds to wait for the trapper / API

ZLAB_AGENT=${ZLAB_AGENT:-1}
NGINX_CHANGED=0

# ---- helpers ----------------------------------------------------------------------------------------
readonly T0=${EPOCHREALTIME/[.,]/}
# One progress line on stderr, prefixed with the seconds elapsed since the script started.
log() {
    local now=${EPOCHREALTIME/[.,]/}
    printf 'zabbix-lab: [%6.2fs] %s\n' "$(((now - T0) / 10000))e-2" "$*" >&2
}
die() { printf 'zabbix-lab: error: %s\n' "$*" >&2; exit 1; }

# Write stdin to $1 (mode $2, group $3) only when the content differs. Returns 0 if it changed, 1 if not.
write_if_changed() {
    local path=$1 mode=$2 group=${3:-root} tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 1
    fi
    install -D -m "$mode" -o root -g "$group" "$tmp" "$path"
    rm -f "$tmp"
    return 0
}

# Is the process alive (and not a zombie: PID 1 here may not reap orphans)?
pid_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]]
}

# Pid from a pid file if that process is alive and its command name starts with $2; else nothing.
live_pid() {
    local file=$1 comm=$2 pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    pid_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] || return 1
    printf '%s\n' "$pid"
}

# SIGTERM the pid in $1 (command name $2) and wait until it is gone, bounded by STOP_TIMEOUT.
stop_pidfile() {
    local file=$1 comm=$2 name=$3 pid i
    if ! pid=$(live_pid "$file" "$comm"); then
        log "$name: not running"
        return 0
    fi
    log "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    die "$name (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM"
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_running() { pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" status >/dev/null 2>&1; }

# psql as the postgres superuser (local socket); prints unaligned tuples.
pg_super() { runuser -u postgres -- psql -X -q -tA -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"; }

db_exists() { [[ $(pg_super -c "SELECT 1 FROM pg_database WHERE datname='$1'") == 1 ]]; }

# ---- install -------------------------------------------------------------------------------------------
missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
    done
}

TEMP_POLICY=0
remove_temp_policy() {
    if [[ $TEMP_POLICY == 1 ]]; then
        rm -f "$POLICY_RC"
        TEMP_POLICY=0
    fi
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        log "packages: all present"
        return 0
    fi
    log "packages: installing ${missing[*]}"
    if [[ ! -e $POLICY_RC ]]; then
        # Keep stock services (agent and nginx on 0.0.0.0, ...) from auto-starting during the install.
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        TEMP_POLICY=1
        trap remove_temp_policy EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -qq >&2
    fi
    if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2; then
        log "packages: install failed, refreshing the package lists and retrying"
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
    fi
    remove_temp_policy
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "packages still missing after install: ${missing[*]}"
}

# ---- PostgreSQL and the database ---------------------------------------------------------------------
start_postgres() {
    if pg_running; then
        log "postgresql: running"
        return 0
    fi
    log "postgresql: starting cluster $PG_VERSION/$PG_CLUSTER"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
}

stop_postgres() {
    if ! pg_running; then
        log "postgresql: not running"
        return 0
    fi
    log "postgresql: stopping"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop -m fast
}

setup_database() {
    if [[ $(pg_super -c "SELECT 1 FROM pg_roles WHERE rolname='$DB_USER'") != 1 ]]; then
        log "database: creating role $DB_USER"
        pg_super -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'"
    fi
    # The schema is imported once, into a scratch database that is renamed to the pristine copy only
    # when the import succeeded; the working database is a copy of the pristine one (fast reset).
    if ! db_exists "$DB_PRISTINE"; then
        if db_exists "$DB_IMPORTING"; then
            runuser -u postgres -- dropdb -p "$PG_PORT" --force "$DB_IMPORTING"
        fi
        log "database: importing the Zabbix schema (about 30 s)"
        runuser -u postgres -- createdb -p "$PG_PORT" -O "$DB_USER" -E UTF8 -T template0 "$DB_IMPORTING"
        local f
        for f in schema images data; do
            [[ -r $SCHEMA_DIR/$f.sql.gz ]] || die "missing $SCHEMA_DIR/$f.sql.gz"
        done
        zcat "$SCHEMA_DIR"/{schema,images,data}.sql.gz |
            PGPASSWORD=$DB_PASSWORD psql -X -q -v ON_ERROR_STOP=1 -h "$LAB_ADDR" -p "$PG_PORT" -U "$DB_USER" -d "$DB_IMPORTING" >/dev/null
        pg_super -c "ALTER DATABASE $DB_IMPORTING RENAME TO $DB_PRISTINE"
    fi
    if ! db_exists "$DB_NAME"; then
        log "database: creating $DB_NAME from $DB_PRISTINE"
        runuser -u postgres -- createdb -p "$PG_PORT" -O "$DB_USER" -T "$DB_PRISTINE" "$DB_NAME"
    else
        log "database: $DB_NAME present"
    fi
}

# ---- zabbix_server -----------------------------------------------------------------------------------
server_running() { live_pid "$SERVER_PID" zabbix_server >/dev/null; }

configure_server() {
    grep -Eq "^[[:space:]]*Include=${SERVER_CONF_D}/?(\*\.conf)?[[:space:]]*$" "$SERVER_CONF" ||
        printf '\nInclude=%s/*.conf\n' "$SERVER_CONF_D" >>"$SERVER_CONF"
    if write_if_changed "$SERVER_LAB_CONF" 0640 zabbix <<EOF; then
# Written by Concierge scripts/zabbix-lab.sh
DBHost=$LAB_ADDR
DBPort=$PG_PORT
DBName=$DB_NAME
DBUser=$DB_USER
DBPassword=$DB_PASSWORD
ListenIP=$LAB_ADDR
ListenPort=$TRAPPER_PORT
CacheUpdateFrequency=1
StartTrappers=5
# Action remote commands run on the server within Timeout: concierge-scale waits for
# docker-compose, which needs more than the stock 3 s.
Timeout=30
LogSlowQueries=0
# The tests create tens of thousands of float items (1,000 timers x 11 statistics, more than
# once); the stock 4 MB TrendCacheSize runs out and the server exits ("out of memory ...
# please increase TrendCacheSize").
CacheSize=256M
HistoryCacheSize=128M
HistoryIndexCacheSize=64M
TrendCacheSize=128M
ValueCacheSize=128M
EOF
        log "zabbix_server: wrote $SERVER_LAB_CONF"
        if server_running; then
            stop_pidfile "$SERVER_PID" zabbix_server zabbix_server
        fi
    fi
}

start_server() {
    if server_running; then
        log "zabbix_server: running"
        return 0
    fi
    install -d -o zabbix -g zabbix -m 0755 "$RUN_ZABBIX"
    install -d -o zabbix -g zabbix -m 0755 "$(dirname "$SERVER_LOG")"
    log "zabbix_server: starting"
    "$SERVER_BIN" -c "$SERVER_CONF"
}

stop_server() { stop_pidfile "$SERVER_PID" zabbix_server zabbix_server; }

wait_trapper() {
    local deadline=$((SECONDS + READY_TIMEOUT)) out
    log "trapper: waiting for $LAB_ADDR:$TRAPPER_PORT"
    while ((SECONDS < deadline)); do
        if tcp_open "$LAB_ADDR" "$TRAPPER_PORT"; then
            # zabbix_sender exits 2 when the value fails (unknown host); only the response matters.
            out=$("$SENDER_BIN" -z "$LAB_ADDR" -p "$TRAPPER_PORT" -s x -k y -o 1 2>&1) || true
            [[ $out == *"Response from"* ]] && return 0
        fi
        server_running || die "zabbix_server exited; see $SERVER_LOG"
        sleep 0.2
    done
    die "trapper on $LAB_ADDR:$TRAPPER_PORT not ready after ${READY_TIMEOUT}s; see $SERVER_LOG"
}

# ---- frontend: php-fpm + nginx ---------------------------------------------------------------------------
configure_frontend() {
    if write_if_changed "$FRONTEND_CONF" 0640 www-data <<EOF; then
<?php
// Written by Concierge scripts/zabbix-lab.sh
global \$DB, \$HISTORY;

\$DB['TYPE']     = 'POSTGRESQL';
\$DB['SERVER']   = '$LAB_ADDR';
\$DB['PORT']     = '$PG_PORT';
\$DB['DATABASE'] = '$DB_NAME';
\$DB['USER']     = '$DB_USER';
\$DB['PASSWORD'] = '$DB_PASSWORD';
\$DB['SCHEMA']   = '';
\$DB['ENCRYPTION'] = false;
\$DB['KEY_FILE'] = '';
\$DB['CERT_FILE'] = '';
\$DB['CA_FILE'] = '';
\$DB['VERIFY_HOST'] = false;
\$DB['CIPHER_LIST'] = '';
\$DB['VAULT_URL'] = '';
\$DB['VAULT_DB_PATH'] = '';
\$DB['VAULT_TOKEN'] = '';
\$DB['DOUBLE_IEEE754'] = true;

\$ZBX_SERVER      = '$LAB_ADDR';
\$ZBX_SERVER_PORT = '$TRAPPER_PORT';
\$ZBX_SERVER_NAME = 'concierge-lab';

\$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
EOF
        log "frontend: wrote $FRONTEND_CONF"
    fi
    NGINX_CHANGED=0
    if write_if_changed "$NGINX_CONF" 0644 <<EOF; then
# Written by Concierge scripts/zabbix-lab.sh: a standalone nginx for the Zabbix frontend, loopback only.
user www-data;
worker_processes 1;
pid $NGINX_PID;
error_log $NGINX_LOG_DIR/concierge-lab.error.log;

events {
    worker_connections 256;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    client_max_body_size 64m;

    server {
        listen $LAB_ADDR:$HTTP_PORT;
        server_name localhost;
        root $FRONTEND_ROOT;
        index index.php;

        location ~ \.php\$ {
            fastcgi_pass unix:$PHP_FPM_SOCK;
            fastcgi_param SCRIPT_FILENAME \$request_filename;
            fastcgi_param PHP_VALUE "memory_limit=512M
post_max_size=64M
upload_max_filesize=64M
max_execution_time=300
max_input_time=300";
            fastcgi_read_timeout 300;
            include /etc/nginx/fastcgi_params;
        }
    }
}
EOF
        NGINX_CHANGED=1
        log "nginx: wrote $NGINX_CONF"
    fi
}

php_running() { live_pid "$PHP_FPM_PID" php-fpm >/dev/null; }
nginx_running() { live_pid "$NGINX_PID" nginx >/dev/null; }

start_php() {
    if php_running; then
        log "php-fpm: running"
        return 0
    fi
    install -d -o www-data -g www-data -m 0755 "$RUN_PHP"
    log "php-fpm: starting"
    "$PHP_FPM_BIN" -D
}

start_nginx() {
    install -d -m 0755 "$NGINX_LOG_DIR"
    if nginx_running; then
        if [[ $NGINX_CHANGED == 1 ]]; then
            nginx -t -q -c "$NGINX_CONF"
            nginx -c "$NGINX_CONF" -s reload
            log "nginx: running (configuration reloaded)"
        else
            log "nginx: running"
        fi
        return 0
    fi
    log "nginx: starting on $LAB_ADDR:$HTTP_PORT"
    nginx -c "$NGINX_CONF"
}

stop_php() { stop_pidfile "$PHP_FPM_PID" php-fpm php-fpm; }
stop_nginx() { stop_pidfile "$NGINX_PID" nginx nginx; }

api_version() {
    curl -sS --max-time 5 -H 'Content-Type: application/json-rpc' \
        -d '{"jsonrpc":"2.0","method":"apiinfo.version","params":{},"id":1}' "$API_URL" 2>/dev/null |
        "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["result"])' 2>/dev/null
}

wait_api() {
    local deadline=$((SECONDS + READY_TIMEOUT)) v
    log "api: waiting for $API_URL"
    while ((SECONDS < deadline)); do
        if v=$(api_version) && [[ $v == 6.0.* ]]; then
            log "api: version $v"
            return 0
        fi
        sleep 0.2
    done
    die "API at $API_URL not ready after ${READY_TIMEOUT}s (last apiinfo.version: '${v:-}'); see $NGINX_LOG_DIR/concierge-lab.error.log"
}

# ---- zabbix_agentd ---------------------------------------------------------------------------------------
agent_running() { live_pid "$AGENT_PID" zabbix_agentd >/dev/null; }

configure_agent() {
    grep -Eq "^[[:space:]]*Include=${AGENT_CONF_D}/?(\*\.conf)?[[:space:]]*$" "$AGENT_CONF" ||
        printf '\nInclude=%s/*.conf\n' "$AGENT_CONF_D" >>"$AGENT_CONF"
    if write_if_changed "$AGENT_LAB_CONF" 0644 <<EOF; then
# Written by Concierge scripts/zabbix-lab.sh
ListenIP=$LAB_ADDR
ListenPort=$AGENT_PORT
Hostname=$LAB_HOST
Server=$LAB_ADDR
ServerActive=$LAB_ADDR:$TRAPPER_PORT
AllowKey=system.run[*]
Timeout=3
UserParameter=concierge.lab.echo[*],echo "\$1"
EOF
        log "zabbix_agentd: wrote $AGENT_LAB_CONF"
        if agent_running; then
            stop_pidfile "$AGENT_PID" zabbix_agentd zabbix_agentd
        fi
    fi
}

start_agent() {
    if agent_running; then
        log "zabbix_agentd: running"
        return 0
    fi
    install -d -o zabbix -g zabbix -m 0755 "$RUN_ZABBIX" /var/log/zabbix-agent
    log "zabbix_agentd: starting on $LAB_ADDR:$AGENT_PORT"
    "$AGENT_BIN" -c "$AGENT_CONF"
}

stop_agent() { stop_pidfile "$AGENT_PID" zabbix_agentd zabbix_agentd; }

wait_agent() {
    local deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        tcp_open "$LAB_ADDR" "$AGENT_PORT" && return 0
        sleep 0.2
    done
    die "agent on $LAB_ADDR:$AGENT_PORT not listening after ${READY_TIMEOUT}s"
}

# ---- API setup: group, host, stock host ---------------------------------------------------------------
api_setup() {
    local changed
    log "api: ensuring group '$LAB_GROUP', host '$LAB_HOST', stock host '$STOCK_HOST' disabled"
    changed=$(ZLAB_API_URL=$API_URL ZLAB_API_USER=$API_USER ZLAB_API_PASSWORD=$API_PASSWORD \
        ZLAB_GROUP=$LAB_GROUP ZLAB_HOST=$LAB_HOST ZLAB_STOCK_HOST=$STOCK_HOST \
        ZLAB_ADDR=$LAB_ADDR ZLAB_AGENT_PORT=$AGENT_PORT \
        "$PYTHON" - <<'PY'
import json, os, sys, urllib.request

URL = os.environ["ZLAB_API_URL"]
auth = None


def call(method, params):
    body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
    if auth is not None:
        body["auth"] = auth
    req = urllib.request.Request(URL, json.dumps(body).encode(),
                                 {"Content-Type": "application/json-rpc"})
    with urllib.request.urlopen(req, timeout=30) as r:
        resp = json.load(r)
    if "error" in resp:
        sys.exit(f"zabbix-lab: error: {method}: {resp['error'].get('message')} {resp['error'].get('data')}")
    return resp["result"]


changed = False


def note(msg):
    global changed
    changed = True
    print(f"zabbix-lab: api: {msg}", file=sys.stderr)


auth = call("user.login", {"username": os.environ["ZLAB_API_USER"], "password": os.environ["ZLAB_API_PASSWORD"]})
try:
    group, host, stock = os.environ["ZLAB_GROUP"], os.environ["ZLAB_HOST"], os.environ["ZLAB_STOCK_HOST"]
    groups = call("hostgroup.get", {"filter": {"name": [group]}, "output": ["groupid"]})
    if groups:
        groupid = groups[0]["groupid"]
    else:
        groupid = call("hostgroup.create", {"name": group})["groupids"][0]
        note(f"created host group {group} ({groupid})")
    hosts = call("host.get", {"filter": {"host": [host]}, "output": ["hostid", "status"]})
    if hosts:
        if hosts[0]["status"] != "0":
            call("host.update", {"hostid": hosts[0]["hostid"], "status": 0})
            note(f"enabled host {host}")
    else:
        hostid = call("host.create", {
            "host": host,
            "groups": [{"groupid": groupid}],
            "interfaces": [{"type": 1, "main": 1, "useip": 1, "ip": os.environ["ZLAB_ADDR"], "dns": "",
                            "port": os.environ["ZLAB_AGENT_PORT"]}],
        })["hostids"][0]
        note(f"created host {host} ({hostid})")
    for h in call("host.get", {"filter": {"host": [stock]}, "output": ["hostid", "status"]}):
        if h["status"] == "0":
            call("host.update", {"hostid": h["hostid"], "status": 1})
            note(f"disabled stock host {stock}")
finally:
    call("user.logout", [])
print("changed" if changed else "unchanged")
PY
)
    if [[ $changed == changed ]]; then
        # Make the server see the new host now instead of at the next CacheUpdateFrequency tick.
        log "zabbix_server: config_cache_reload"
        "$SERVER_BIN" -c "$SERVER_CONF" -R config_cache_reload >/dev/null
    fi
}

# ---- verbs -----------------------------------------------------------------------------------------------
summary() {
    cat <<EOF
Zabbix lab is up:
  API        $API_URL  ($API_USER / $API_PASSWORD)
  trapper    $LAB_ADDR:$TRAPPER_PORT   (zabbix_sender -z $LAB_ADDR -s $LAB_HOST -k KEY -o VALUE)
  agent      $( [[ $ZLAB_AGENT == 1 ]] && echo "$LAB_ADDR:$AGENT_PORT" || echo "disabled (ZLAB_AGENT=0)" )
  postgres   $LAB_ADDR:$PG_PORT   (db/user/password $DB_NAME/$DB_USER/$DB_PASSWORD)
  host       $LAB_HOST in group $LAB_GROUP
EOF
}

require_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }

# The scaling actions run concierge-scale as user zabbix on the server: it needs the Docker
# socket (group docker) and a state directory. The server takes its groups when it starts.
configure_scaling() {
    install -d -o zabbix -g zabbix -m 0755 "$SCALE_STATE_DIR"
    if getent group docker >/dev/null && ! id -nG zabbix | tr ' ' '\n' | grep -qx docker; then
        usermod -aG docker zabbix
        log "zabbix: added to group docker (for concierge-scale)"
        if server_running; then
            stop_server
        fi
    fi
}

cmd_up() {
    require_root
    install_packages
    start_postgres
    setup_database
    configure_server
    configure_scaling
    start_server
    configure_frontend
    start_php
    start_nginx
    if [[ $ZLAB_AGENT == 1 ]]; then
        configure_agent
        start_agent
    fi
    wait_trapper
    wait_api
    [[ $ZLAB_AGENT == 1 ]] && wait_agent
    api_setup
    summary
}

cmd_down() {
    require_root
    stop_agent
    stop_server
    stop_nginx
    stop_php
    if command -v pg_ctlcluster >/dev/null; then
        stop_postgres
    fi
}

cmd_status() {
    local ok=0 v
    line() { printf '%-14s %s\n' "$1" "$2"; }
    if command -v pg_ctlcluster >/dev/null && pg_running; then line postgresql running; else line postgresql stopped; ok=1; fi
    if server_running; then line zabbix_server running; else line zabbix_server stopped; ok=1; fi
    if tcp_open "$LAB_ADDR" "$TRAPPER_PORT"; then line trapper "running ($LAB_ADDR:$TRAPPER_PORT)"; else line trapper stopped; ok=1; fi
    if php_running; then line php-fpm running; else line php-fpm stopped; ok=1; fi
    if nginx_running; then line nginx "running ($LAB_ADDR:$HTTP_PORT)"; else line nginx stopped; ok=1; fi
    if v=$(api_version) && [[ $v == 6.0.* ]]; then line api "running ($v)"; else line api stopped; ok=1; fi
    if [[ $ZLAB_AGENT == 1 ]]; then
        if agent_running; then line zabbix_agentd "running ($LAB_ADDR:$AGENT_PORT)"; else line zabbix_agentd stopped; ok=1; fi
    else
        line zabbix_agentd "disabled (ZLAB_AGENT=0)"
    fi
    return "$ok"
}

cmd_reset() {
    require_root
    install_packages
    start_postgres
    stop_server
    if db_exists "$DB_PRISTINE"; then
        log "database: recreating $DB_NAME from $DB_PRISTINE"
        if db_exists "$DB_NAME"; then
            runuser -u postgres -- dropdb -p "$PG_PORT" --force "$DB_NAME"
        fi
        runuser -u postgres -- createdb -p "$PG_PORT" -O "$DB_USER" -T "$DB_PRISTINE" "$DB_NAME"
    fi
    # up recreates anything missing, starts the server and redoes the API setup.
    cmd_up
}

usage() {
    echo "usage: $0 up|down|status|reset|server-stop|server-start   (env: ZLAB_AGENT=1|0)" >&2
    exit 2
}

main() {
    [[ $ZLAB_AGENT == 0 || $ZLAB_AGENT == 1 ]] || die "ZLAB_AGENT must be 0 or 1"
    (($# == 1)) || usage
    case $1 in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        server-stop) require_root; stop_server ;;
        server-start) require_root; start_server; wait_trapper ;;
        *) usage ;;
    esac
}

main "$@"
