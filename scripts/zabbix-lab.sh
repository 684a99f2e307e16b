#!/usr/bin/env bash
# Zabbix 6.0 and 7.0 LTS side by side on loopback, for Concierge's end-to-end tests.
#
#   scripts/zabbix-lab.sh up [VERSION]       install what is missing, start everything, create group/host
#   scripts/zabbix-lab.sh down [VERSION]     stop every lab daemon (PostgreSQL too when no VERSION is given)
#   scripts/zabbix-lab.sh status [VERSION]   one line per component; exit 0 only if all are up
#   scripts/zabbix-lab.sh reset [VERSION]    restore the pristine database, restart, redo the API setup
#   scripts/zabbix-lab.sh server-stop VERSION / server-start VERSION   only that Zabbix server (outage tests):
#                                            node b too (stopped first; started last with ZLAB_HA_NODE_B=1)
#   scripts/zabbix-lab.sh proxy-stop|proxy-start VERSION NAME   one proxy (failover tests; NAME as env lists it)
#   scripts/zabbix-lab.sh node-stop|node-start VERSION a|b      one HA node (HA tests)
#   scripts/zabbix-lab.sh env VERSION        the version's facts as shell assignments (no root, no lab needed):
#                                            eval "$(scripts/zabbix-lab.sh env 7.0)"
# VERSION is 6.0 or 7.0; without it up/down/status/reset act on both. Every verb is idempotent.
#
#   version  packages                     API (Admin/zabbix)                   trapper          agent            database
#   6.0      Debian 12, on the host       http://127.0.0.1:8088/api_jsonrpc.php 127.0.0.1:10051  127.0.0.1:10050  zabbix
#   7.0      Debian 13, in a root below   http://127.0.0.1:8070/api_jsonrpc.php 127.0.0.1:10061  127.0.0.1:10060  zabbix7
#   Both use the host's PostgreSQL 15 on 127.0.0.1:5432. Each server is node a of an HA cluster whose
#   node b listens (when active) on 10053 (6.0) / 10063 (7.0). Active proxies: 6.0 10052; 7.0 a proxy
#   group of 10071 and 10072, and 10073 on its own (see "distributed Zabbix" below).
#   A new part is a component: give it facts (facts()), configure/start/stop/running functions and a
#   place in components(); up, down and status then handle it.
#
# Why 7.0 runs chrooted in a debootstrapped root (STATE_DIR/root-7.0), not in a Docker image:
# - its daemons are ordinary host processes (pid files, kill, /proc): server-stop/server-start are
#   a signal and an exec, and status needs no engine;
# - the root is built once per machine (debootstrap + apt, about 3 minutes) and used in place;
#   an image would copy it (docker import) and need rebuilding whenever a package is added;
# - 7.0's zabbix_sender and zabbix_agentd run straight from the host through the root's own
#   dynamic loader (STATE_DIR/bin/7.0/*), so tests can mix 6.0 and 7.0 agents and servers;
# - host networking and the host's PostgreSQL need nothing special, and the Docker engine that
#   the tests scale is not also the thing that runs the lab.
# The 7.0 daemons share one private mount namespace (unshare --mount): /proc, /dev, /sys, the
# Docker socket and the shared directories (this checkout and ZLAB_SHARE, default /tmp; they appear
# at the same paths, so action commands, compose files and test binaries resolve as on the host)
# are bind-mounted there only. The host's mount table never changes: `down` undoes every mount by
# ending the last process in the root, and removing the root can never reach through a bind mount.
#
# Needs root on Debian 12 (no systemd needed: every daemon is started by hand). Loopback only.
# Environment: ZLAB_AGENT=1 (default) also runs each version's zabbix_agentd, ZLAB_AGENT=0 skips them;
# ZLAB_HA_NODE_B=1 keeps each HA node b running as standby (default 0: only while an HA test runs);
# ZLAB_TAKE_OVER=1 lets up/reset reconfigure a Zabbix found on the host that the lab did not
# install (refused otherwise: make test must not silently rewrite someone's Zabbix);
# ZLAB_SHARE="DIR ..." the directories the 7.0 root shares with the host besides the checkout
# (remembered; up adds new ones to running daemons); ZLAB_MIRROR the Debian mirror for the 7.0 root.
# Recipes and measurements: shared/docs/zabbix-lab.md (6.0) and zabbix7-lab.md (7.0).
set -euo pipefail
export LC_ALL=C

SELF=$(readlink -f "${BASH_SOURCE[0]}")
CHECKOUT=$(cd "$(dirname "$SELF")/.." && pwd -P)
# The checkout by the path it was called through (a symlinked path that tools and tests may use).
CHECKOUT_CALLED=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -L)
readonly SELF CHECKOUT CHECKOUT_CALLED
# TLS material and the servers' certificate settings (configure_tls), issue #12.
source "$CHECKOUT/scripts/lab-tls.sh"

# ---- constants shared by both versions ---------------------------------------------------------------
readonly VERSIONS=(6.0 7.0)
readonly LAB_ADDR=127.0.0.1
readonly PG_VERSION=15
readonly PG_CLUSTER=main
readonly PG_PORT=5432
readonly API_USER=Admin
readonly API_PASSWORD=zabbix
readonly LAB_GROUP=Concierge
readonly LAB_HOST=concierge-lab
readonly STOCK_HOST="Zabbix server"
readonly RUN_USER=zabbix

readonly STATE_DIR=/var/lib/concierge-lab
readonly ROOT_70=$STATE_DIR/root-7.0
readonly SUITE_70=trixie
readonly POLICY_RC=/usr/sbin/policy-rc.d
readonly PYTHON=/usr/bin/python3
readonly SCALE_STATE_DIR=/var/lib/concierge
readonly DOCKER_SOCK=/run/docker.sock

readonly HOST_PACKAGES=(postgresql zabbix-server-pgsql zabbix-frontend-php php-pgsql php-fpm nginx zabbix-agent curl python3
    locales)
readonly ROOT_PACKAGES=(zabbix-server-pgsql zabbix-frontend-php php8.4-fpm php8.4-pgsql nginx zabbix-sender
    zabbix-agent docker-cli docker-compose locales)
# The frontend's default language needs this locale: without it every graph image is an error.
readonly FRONTEND_LOCALE=en_US.UTF-8

# Paths inside a version's filesystem (the host's for 6.0, the root's for 7.0): the same for both.
readonly SCHEMA_DIR=/usr/share/zabbix-server-pgsql
readonly FRONTEND_ROOT=/usr/share/zabbix
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
readonly AGENT_LOG=/var/log/zabbix-agent/zabbix_agentd.log
readonly RUN_ZABBIX=/run/zabbix
readonly FRONTEND_CONF=/etc/zabbix/zabbix.conf.php
readonly RUN_PHP=/run/php
readonly LAB_ETC=/etc/concierge-lab
readonly NGINX_CONF=${LAB_ETC}/nginx.conf
readonly NGINX_PID=/run/concierge-lab-nginx.pid
readonly NGINX_LOG_DIR=/var/log/nginx

readonly STOP_TIMEOUT=30     # seconds to wait for a daemon to exit after SIGTERM
readonly READY_TIMEOUT=60    # seconds to wait for the trapper / API

ZLAB_AGENT=${ZLAB_AGENT:-1}
ZLAB_HA_NODE_B=${ZLAB_HA_NODE_B:-0}
NGINX_CHANGED=0
V=

# ---- facts: everything that differs between the versions, in one place --------------------------------
# Sets the V_* variables for version $1. V_ROOT is the prefix of the version's filesystem on the
# host ("" for 6.0); `vrun` runs a command in that filesystem.
facts() {
    case $1 in
        6.0)
            V=6.0
            V_ROOT=
            V_TRAPPER_PORT=10051
            V_HTTP_PORT=8088
            V_AGENT_PORT=10050
            V_DB=zabbix
            V_DB_USER=zabbix
            V_DB_PASSWORD=zabbix
            V_PHP=8.2
            V_GLOBAL_SCRIPTS=1  # 6.0 has no EnableGlobalScripts: scripts may always run on the server
            V_SENDER=/usr/bin/zabbix_sender
            V_AGENTD=/usr/sbin/zabbix_agentd
            V_GET=/usr/bin/zabbix_get
            ;;
        7.0)
            V=7.0
            V_ROOT=$ROOT_70
            V_TRAPPER_PORT=10061
            V_HTTP_PORT=8070
            V_AGENT_PORT=10060
            V_DB=zabbix7
            V_DB_USER=zabbix7
            V_DB_PASSWORD=zabbix7
            V_PHP=8.4
            V_GLOBAL_SCRIPTS=0  # Debian 13's stock EnableGlobalScripts=0, kept
            V_SENDER=$STATE_DIR/bin/7.0/zabbix_sender
            V_AGENTD=$STATE_DIR/bin/7.0/zabbix_agentd
            V_GET=$STATE_DIR/bin/7.0/zabbix_get
            ;;
        *) die "unknown version '$1' (6.0 or 7.0)" ;;
    esac
    V_DB_PRISTINE=${V_DB}_pristine
    V_DB_IMPORTING=${V_DB}_importing
    V_API_URL="http://${LAB_ADDR}:${V_HTTP_PORT}/api_jsonrpc.php"
    V_PHP_FPM_BIN=/usr/sbin/php-fpm${V_PHP}
    V_PHP_FPM_PID=/run/php/php${V_PHP}-fpm.pid
    V_PHP_FPM_SOCK=/run/php/php${V_PHP}-fpm.sock
}

# The host path of path $1 in the current version's filesystem.
hp() { printf '%s%s\n' "$V_ROOT" "$1"; }

# Run a command in the current version's filesystem: directly for 6.0, in the root for 7.0.
vrun() {
    if [[ -z $V_ROOT ]]; then
        "$@"
    else
        in_root "$@"
    fi
}

# The home directory of user $1 in the current version's filesystem.
user_home() { awk -F: -v u="$1" '$1 == u { print $6 }' "$(hp /etc/passwd)"; }

# Start a daemon as its systemd unit would: a clean environment with the home of the user it runs
# as (a root's HOME makes the docker CLI of an action's command lose its plugins), and without the
# locks' descriptors (a daemon holding one would block every later run).
start_daemon() {
    local user=$1
    shift
    vrun env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        HOME="$(user_home "$user")" "$@" 7>&- 8>&- 9>&-
}

# The components of a version, in start order (down stops them in reverse).
components() {
    local c=(server php nginx)
    [[ $ZLAB_AGENT == 1 ]] && c+=(agent)
    printf '%s\n' "${c[@]}"
}

# ---- helpers ----------------------------------------------------------------------------------------
readonly T0=${EPOCHREALTIME/[.,]/}
# One progress line on stderr, prefixed with the seconds elapsed since the script started.
log() {
    local now=${EPOCHREALTIME/[.,]/}
    printf 'zabbix-lab: [%6.2fs] %s%s\n' "$(((now - T0) / 10000))e-2" "${V:+$V }" "$*" >&2
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

# The root directory of process $1 ("/" on the host, the root for 7.0), or nothing when it cannot
# be read (not root).
proc_root() { readlink "/proc/$1/root" 2>/dev/null || true; }

# Pid from the current version's pid file $1 (a path in its filesystem) if that process is alive,
# its command name starts with $2 and it runs in the version's filesystem; else nothing.
live_pid() {
    local file pid comm=$2 root
    file=$(hp "$1")
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    pid_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] || return 1
    # Pid files in the root outlive a reboot: a reused pid must not pass for a lab daemon.
    root=$(proc_root "$pid")
    [[ -z $root || $root == "${V_ROOT:-/}" ]] || return 1
    printf '%s\n' "$pid"
}

# SIGTERM the pid in pid file $1 (command name $2) and wait until it is gone, bounded by STOP_TIMEOUT.
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

require_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }

# ---- host packages -------------------------------------------------------------------------------------
missing_packages() {
    local p
    for p in "$@"; do
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

# Install the host packages $@ that are missing.
install_host_packages() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
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
    if ! apt-get install -y -qq --no-install-recommends "$@" >&2; then
        log "packages: install failed, refreshing the package lists and retrying"
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "$@" >&2
    fi
    remove_temp_policy
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]} == 0)) || die "packages still missing after install: ${missing[*]}"
}

# The 6.0 server's scaling actions run docker compose on the host: docker-compose (Debian 12's,
# v1) when a Docker engine is there without any compose.
compose_package() {
    command -v docker >/dev/null || return 0
    command -v docker-compose >/dev/null && return 0
    docker compose version >/dev/null 2>&1 && return 0
    echo docker-compose
}

# ---- the 7.0 root ------------------------------------------------------------------------------------
# The Debian mirror the host uses (the bookworm entry of its apt sources), for the trixie root.
debian_mirror() {
    if [[ -n ${ZLAB_MIRROR:-} ]]; then
        printf '%s\n' "$ZLAB_MIRROR"
        return
    fi
    local m=
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(awk 'BEGIN { RS = "" } /Suites:[^\n]* bookworm( |\n|$)/ {
                 if (match($0, /URIs: [^ \n]+/)) { print substr($0, RSTART + 6, RLENGTH - 6); exit } }' \
            /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $m && -r /etc/apt/sources.list ]]; then
        m=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

root_built() { [[ -f $ROOT_70/.concierge-lab-root ]]; }

# Give the root the host's uid/gid for zabbix and the host's gid for docker before any package
# creates them: files the tests make for user zabbix (state dirs) and the Docker socket then mean
# the same on both sides.
seed_root_accounts() {
    local root=$1 uid gid dgid
    if getent passwd "$RUN_USER" >/dev/null && ! chroot "$root" getent passwd "$RUN_USER" >/dev/null; then
        uid=$(id -u "$RUN_USER")
        gid=$(id -g "$RUN_USER")
        chroot "$root" getent group "$gid" >/dev/null && die "gid $gid of $RUN_USER is taken in $root"
        chroot "$root" getent passwd "$uid" >/dev/null && die "uid $uid of $RUN_USER is taken in $root"
        chroot "$root" groupadd -r -g "$gid" "$RUN_USER"
        chroot "$root" useradd -r -u "$uid" -g "$gid" -d /var/lib/zabbix -s /usr/sbin/nologin \
            -c "Zabbix Monitoring System" "$RUN_USER"
    fi
    if dgid=$(getent group docker | cut -d: -f3) && [[ -n $dgid ]] &&
        ! chroot "$root" getent group docker >/dev/null; then
        chroot "$root" getent group "$dgid" >/dev/null && die "gid $dgid of group docker is taken in $root"
        chroot "$root" groupadd -r -g "$dgid" docker
    fi
}

# debootstrap the root once per machine. It is built under a temporary name and renamed when
# complete; nothing is ever mounted on the host, so removing a half-built one is safe.
build_root() {
    root_built && return 0
    install_host_packages debootstrap
    local new=$ROOT_70.new mirror
    mirror=$(debian_mirror)
    if [[ -e $new ]]; then
        log "root: removing the half-built $new"
        rm -rf --one-file-system "$new"
    fi
    # An older Debian 12 image may lack trixie's archive key (this keyring has it from 2023.3+deb12u2).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --only-upgrade debian-archive-keyring >&2
    log "root: debootstrap $SUITE_70 into $new from $mirror (about 30 s)"
    install -d -m 0755 "$STATE_DIR"
    debootstrap --variant=minbase "$SUITE_70" "$new" "$mirror" >&2 ||
        die "debootstrap failed; see $new/debootstrap/debootstrap.log"
    printf '#!/bin/sh\nexit 101\n' >"$new$POLICY_RC"
    chmod 755 "$new$POLICY_RC"
    seed_root_accounts "$new"
    printf 'suite=%s\nmirror=%s\n' "$SUITE_70" "$mirror" >"$new/.concierge-lab-root"
    mv "$new" "$ROOT_70"
}

# Install the root's missing packages (apt runs in a private mount namespace with /proc and /dev).
install_root_packages() {
    local missing
    mapfile -t missing < <(dpkg-query --admindir="$ROOT_70/var/lib/dpkg" -W -f='${Package} ${Status}\n' \
        "${ROOT_PACKAGES[@]}" 2>/dev/null | awk '$4 == "installed" { print $1 }' |
        sort | comm -13 - <(printf '%s\n' "${ROOT_PACKAGES[@]}" | sort))
    if ((${#missing[@]} == 0)); then
        log "root packages: all present"
        return 0
    fi
    log "root packages: installing ${missing[*]} (about 2 min the first time)"
    cp /etc/resolv.conf "$ROOT_70/etc/resolv.conf"
    unshare --mount --propagation private -- "$SELF" __root-apt "${missing[@]}"
}

# (In a private mount namespace.) apt-get update and install $@ in the root.
root_apt() {
    mount -t proc proc "$ROOT_70/proc"
    mount --rbind /dev "$ROOT_70/dev"
    local apt=(chroot "$ROOT_70" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get -qq)
    "${apt[@]}" update >&2
    "${apt[@]}" install -y --no-install-recommends "$@" >&2
    "${apt[@]}" clean >&2
}

# The directories the user chose to share: ZLAB_SHARE when given (and remembered), else what was
# remembered, else /tmp.
share_base() {
    local file=$STATE_DIR/7.0/shares
    if [[ -n ${ZLAB_SHARE:-} ]]; then
        local dirs
        read -ra dirs <<<"$ZLAB_SHARE"
        printf '%s\n' "${dirs[@]}"
    elif [[ -r $file ]]; then
        cat "$file"
    else
        printf '%s\n' /tmp
    fi
}

# The directories shared with the host at the same paths: the chosen ones and always this checkout,
# by its real path and the one it was called by (a lab that another checkout started must still run
# this one's binaries: CI found a remembered list without its checkout). Gone remembered ones drop out.
shares_70() {
    local s
    { share_base; printf '%s\n' "$CHECKOUT" "$CHECKOUT_CALLED"; } | awk '!seen[$0]++' |
        while IFS= read -r s; do
            [[ -d $s || -n ${ZLAB_SHARE:-} ]] && printf '%s\n' "$s"
        done
    return 0
}

# Check the shares and remember the chosen ones (for env and the next namespace).
remember_shares() {
    local s all=()
    mapfile -t all < <(shares_70)
    for s in "${all[@]}"; do
        [[ $s == /* && -d $s ]] || die "ZLAB_SHARE: $s is not an absolute path to a directory"
        case ${s%/} in
            '' | /bin | /boot | /dev | /etc | /lib* | /proc | /run | /sbin | /sys | /usr | /usr/* | /var)
                die "ZLAB_SHARE: $s would hide the root's own system directories" ;;
        esac
        [[ $ROOT_70/ == "${s%/}"/* ]] && die "ZLAB_SHARE: $s contains the root itself"
    done
    install -d -m 0755 "$STATE_DIR/7.0"
    share_base | write_if_changed "$STATE_DIR/7.0/shares" 0644 || true
}

# Daemons already running in their namespace (started by another checkout, before ZLAB_SHARE
# changed, or before a shared directory was removed and made again on the host): bind-mount what
# they do not see as the host does (same device and inode) into it, so the running lab serves this
# checkout too.
add_missing_shares() {
    local pid s want got active=$STATE_DIR/7.0/shares.active
    pid=$(ns_holder) || return 0
    local ns=(nsenter --target "$pid" --mount --)
    touch "$active"
    while IFS= read -r s; do
        s=${s%/}
        want=$(stat -Lc %d:%i -- "$s")
        got=$("${ns[@]}" stat -Lc %d:%i -- "$ROOT_70$s" 2>/dev/null) || got=
        [[ $got == "$want" ]] && continue
        if "${ns[@]}" mountpoint -q -- "$ROOT_70$s"; then
            log "root: $s was made anew on the host; sharing it again"
            "${ns[@]}" umount --lazy -- "$ROOT_70$s" || die "root: cannot unmount the stale $s"
        else
            log "root: sharing $s with the running daemons"
        fi
        "${ns[@]}" mkdir -p -- "$ROOT_70$s" && "${ns[@]}" mount --rbind -- "$s" "$ROOT_70$s" ||
            die "root: cannot share $s with the running 7.0 daemons; restart them: $SELF down 7.0, then up 7.0"
        grep -qxF -- "$s" "$active" || printf '%s\n' "$s" >>"$active"
    done < <(shares_70)
}

# (In the new private mount namespace of the 7.0 daemons.) Mount what they need into the root.
mount_root_fs() {
    local s shares=() kept=() k nested
    mount -t proc proc "$ROOT_70/proc"
    mount --rbind /dev "$ROOT_70/dev"
    mount --rbind /sys "$ROOT_70/sys"
    mapfile -t shares < <(shares_70 | sort)
    for s in "${shares[@]}"; do
        s=${s%/}
        nested=0
        for k in "${kept[@]}"; do
            [[ $s == "$k"/* ]] && nested=1
        done
        ((nested)) && continue
        kept+=("$s")
        mkdir -p "$ROOT_70$s"
        mount --rbind "$s" "$ROOT_70$s"
    done
    if [[ -S $DOCKER_SOCK ]]; then
        touch "$ROOT_70$DOCKER_SOCK"
        mount --bind "$DOCKER_SOCK" "$ROOT_70$DOCKER_SOCK"
    fi
    printf '%s\n' "${kept[@]}" >"$STATE_DIR/7.0/shares.active"
}

# A live process of the 7.0 daemons' namespace, if any (the current facts are 7.0's).
ns_holder() {
    local pid
    for pid in $(live_pid "$SERVER_PID" zabbix_server) $(live_pid "$V_PHP_FPM_PID" php-fpm) \
        $(live_pid "$NGINX_PID" nginx) $(live_pid "$AGENT_PID" zabbix_agentd); do
        printf '%s\n' "$pid"
        return 0
    done
    return 1
}

# Run a command chrooted in the 7.0 root, inside the daemons' namespace (made when none is alive).
in_root() {
    local pid
    if pid=$(ns_holder); then
        nsenter --target "$pid" --mount -- chroot "$ROOT_70" "$@"
    else
        unshare --mount --propagation private -- "$SELF" __ns-chroot "$@"
    fi
}

# Every process chrooted in the root (the lab's by definition), for down.
root_processes() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/root" 2>/dev/null) == "$ROOT_70" ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

# End what still runs in the root after the daemons stopped (commands an action started on the
# agent, ...), so the namespace and its mounts go away.
stop_root_leftovers() {
    local pids i
    mapfile -t pids < <(root_processes)
    ((${#pids[@]} == 0)) && return 0
    log "root: ending ${#pids[@]} leftover process(es): ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        mapfile -t pids < <(root_processes)
        ((${#pids[@]} == 0)) && return 0
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

# Wrappers that run the root's sender, agent and zabbix_get from the host through the root's loader.
write_root_wrappers() {
    local b name path libs
    libs="$ROOT_70/usr/lib/x86_64-linux-gnu"
    for b in /usr/bin/zabbix_sender /usr/sbin/zabbix_agentd /usr/bin/zabbix_get; do
        name=${b##*/}
        path=$ROOT_70$b
        [[ -x $path ]] || die "root: $b is missing"
        write_if_changed "$STATE_DIR/bin/7.0/$name" 0755 <<EOF || true
#!/bin/sh
# Written by Concierge scripts/zabbix-lab.sh: Zabbix 7.0's $name from the lab's Debian 13 root, run on the host.
exec "$libs/ld-linux-x86-64.so.2" --library-path "$libs" "$path" "\$@"
EOF
    done
}

# The root, its packages, accounts and wrappers.
prepare_root() {
    build_root
    install_root_packages
    seed_root_accounts "$ROOT_70"
    if chroot "$ROOT_70" getent group docker >/dev/null &&
        ! chroot "$ROOT_70" id -nG "$RUN_USER" | tr ' ' '\n' | grep -qx docker; then
        chroot "$ROOT_70" usermod -aG docker "$RUN_USER"
        log "root: $RUN_USER added to group docker (for concierge-scale)"
    fi
    write_root_wrappers
    remember_shares
    add_missing_shares
}

# ---- PostgreSQL and the databases ------------------------------------------------------------------
start_postgres() {
    if pg_running; then
        log "postgresql: running"
        return 0
    fi
    log "postgresql: starting cluster $PG_VERSION/$PG_CLUSTER"
    # Not with the lab's lock descriptors: a server inheriting them would hold the locks forever.
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start 7>&- 8>&- 9>&-
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
    if [[ $(pg_super -c "SELECT 1 FROM pg_roles WHERE rolname='$V_DB_USER'") != 1 ]]; then
        log "database: creating role $V_DB_USER"
        pg_super -c "CREATE ROLE $V_DB_USER LOGIN PASSWORD '$V_DB_PASSWORD'"
    fi
    # The schema is imported once, into a scratch database that is renamed to the pristine copy only
    # when the import succeeded; the working database is a copy of the pristine one (fast reset).
    if ! db_exists "$V_DB_PRISTINE"; then
        if db_exists "$V_DB_IMPORTING"; then
            runuser -u postgres -- dropdb -p "$PG_PORT" --force "$V_DB_IMPORTING"
        fi
        log "database: importing the Zabbix schema (about 30 s)"
        runuser -u postgres -- createdb -p "$PG_PORT" -O "$V_DB_USER" -E UTF8 -T template0 "$V_DB_IMPORTING"
        local f dir
        dir=$(hp "$SCHEMA_DIR")
        for f in schema images data; do
            [[ -r $dir/$f.sql.gz ]] || die "missing $dir/$f.sql.gz"
        done
        {
            zcat "$dir"/{schema,images,data}.sql.gz
            # The stock host polls an agent on 127.0.0.1:10050 (the 6.0 lab's): off before any server starts.
            printf "UPDATE hosts SET status=1 WHERE host='%s';\n" "$STOCK_HOST"
        } | PGPASSWORD=$V_DB_PASSWORD psql -X -q -v ON_ERROR_STOP=1 -h "$LAB_ADDR" -p "$PG_PORT" \
            -U "$V_DB_USER" -d "$V_DB_IMPORTING" >/dev/null
        pg_super -c "ALTER DATABASE $V_DB_IMPORTING RENAME TO $V_DB_PRISTINE"
    fi
    if ! db_exists "$V_DB"; then
        log "database: creating $V_DB from $V_DB_PRISTINE"
        runuser -u postgres -- createdb -p "$PG_PORT" -O "$V_DB_USER" -T "$V_DB_PRISTINE" "$V_DB"
    else
        log "database: $V_DB present"
    fi
}

restore_database() {
    db_exists "$V_DB_PRISTINE" || return 0
    log "database: recreating $V_DB from $V_DB_PRISTINE"
    if db_exists "$V_DB"; then
        runuser -u postgres -- dropdb -p "$PG_PORT" --force "$V_DB"
    fi
    runuser -u postgres -- createdb -p "$PG_PORT" -O "$V_DB_USER" -T "$V_DB_PRISTINE" "$V_DB"
}

# ---- zabbix_server -----------------------------------------------------------------------------------
server_running() { live_pid "$SERVER_PID" zabbix_server >/dev/null; }

# The server settings of the current version (6.0's text is exactly what earlier labs wrote).
server_lab_conf() {
    cat <<EOF
# Written by Concierge scripts/zabbix-lab.sh
DBHost=$LAB_ADDR
DBPort=$PG_PORT
DBName=$V_DB
DBUser=$V_DB_USER
DBPassword=$V_DB_PASSWORD
ListenIP=$LAB_ADDR
ListenPort=$V_TRAPPER_PORT
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
    if [[ $V == 7.0 ]]; then
        cat <<EOF
# The root shares /tmp with the host: keep the runtime sockets out of it (the 6.0 server's are there).
SocketDir=$RUN_ZABBIX
# EnableGlobalScripts stays as Debian 13 ships it (0): concierge-setup runs concierge-scale on an agent.
EOF
    fi
}

configure_server() {
    local conf
    conf=$(hp "$SERVER_CONF")
    grep -Eq "^[[:space:]]*Include=${SERVER_CONF_D}/?(\*\.conf)?[[:space:]]*$" "$conf" ||
        printf '\nInclude=%s/*.conf\n' "$SERVER_CONF_D" >>"$conf"
    if server_lab_conf | write_if_changed "$(hp "$SERVER_LAB_CONF")" 0640 "$RUN_USER"; then
        log "zabbix_server: wrote $(hp "$SERVER_LAB_CONF")"
        if server_running; then
            stop_server
        fi
    fi
}

start_server() {
    if server_running; then
        log "zabbix_server: running"
        return 0
    fi
    vrun install -d -o "$RUN_USER" -g "$RUN_USER" -m 0755 "$RUN_ZABBIX" "$(dirname "$SERVER_LOG")"
    release_node "$(node_name a)"
    # A killed server leaves its pid file; the new one writes its own only after it daemonized,
    # so until then the stale file would pass for "exited" (wait_trapper).
    rm -f -- "$(hp "$SERVER_PID")"
    log "zabbix_server: starting"
    start_daemon "$RUN_USER" "$SERVER_BIN" -c "$SERVER_CONF"
}

# A node killed without its shutdown (SIGKILL, a machine stopped under it) stays "active" or
# "standby" in ha_node, and for the failover delay (60 s) its restart fails with "found active
# duplicate node". Called only when that node's process is not running: mark it stopped, as its
# own shutdown would have done.
release_node() {
    db_exists "$V_DB" || return 0
    runuser -u postgres -- psql -X -q -tA -v ON_ERROR_STOP=1 -p "$PG_PORT" -d "$V_DB" \
        -c "UPDATE ha_node SET status=1 WHERE name='$1' AND status IN (0,3)" >/dev/null
}

# The server's last words, for the error line's reader (CI shows stderr, not the log file).
server_exited() {
    local log_file
    log_file=$(hp "$1")
    [[ -r $log_file ]] && tail -n 5 -- "$log_file" | sed 's/^/zabbix-lab:   | /' >&2
    die "zabbix_server exited; see $log_file"
}

stop_server() { stop_pidfile "$SERVER_PID" zabbix_server zabbix_server; }

wait_trapper() {
    local deadline=$((SECONDS + READY_TIMEOUT)) daemonized=$((SECONDS + 10)) out
    log "trapper: waiting for $LAB_ADDR:$V_TRAPPER_PORT"
    while ((SECONDS < deadline)); do
        if tcp_open "$LAB_ADDR" "$V_TRAPPER_PORT"; then
            # zabbix_sender exits 2 when the value fails (unknown host); only the response matters.
            out=$("$V_SENDER" -z "$LAB_ADDR" -p "$V_TRAPPER_PORT" -s x -k y -o 1 2>&1) || true
            [[ $out == *"Response from"* ]] && return 0
        fi
        # No pid file yet: still daemonizing (bounded); a pid file of a dead process: it exited.
        if [[ -e $(hp "$SERVER_PID") ]] || ((SECONDS >= daemonized)); then
            server_running || server_exited "$SERVER_LOG"
        fi
        sleep 0.2
    done
    die "trapper on $LAB_ADDR:$V_TRAPPER_PORT not ready after ${READY_TIMEOUT}s; see $(hp "$SERVER_LOG")"
}

# The scaling actions run concierge-scale as user zabbix (on the 6.0 server, on the 7.0 agent): it
# needs the Docker socket (group docker) and a state directory. Daemons take their groups at start.
configure_scaling() {
    vrun install -d -o "$RUN_USER" -g "$RUN_USER" -m 0755 "$SCALE_STATE_DIR"
    if [[ $V == 6.0 ]] && getent group docker >/dev/null &&
        ! id -nG "$RUN_USER" | tr ' ' '\n' | grep -qx docker; then
        usermod -aG docker "$RUN_USER"
        log "zabbix: added to group docker (for concierge-scale)"
        if server_running; then
            stop_server
        fi
    fi
}

# ---- frontend: php-fpm + nginx ---------------------------------------------------------------------------
frontend_conf() {
    cat <<EOF
<?php
// Written by Concierge scripts/zabbix-lab.sh
global \$DB, \$HISTORY;

\$DB['TYPE']     = 'POSTGRESQL';
\$DB['SERVER']   = '$LAB_ADDR';
\$DB['PORT']     = '$PG_PORT';
\$DB['DATABASE'] = '$V_DB';
\$DB['USER']     = '$V_DB_USER';
\$DB['PASSWORD'] = '$V_DB_PASSWORD';
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
EOF
    if [[ $V == 7.0 ]]; then
        cat <<EOF
\$DB['VAULT'] = '';
\$DB['VAULT_PREFIX'] = '';
\$DB['VAULT_CERT_FILE'] = '';
\$DB['VAULT_KEY_FILE'] = '';
EOF
    fi
    cat <<EOF

\$ZBX_SERVER      = '$LAB_ADDR';
\$ZBX_SERVER_PORT = '$V_TRAPPER_PORT';
\$ZBX_SERVER_NAME = 'concierge-lab';

\$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
EOF
}

nginx_conf() {
    cat <<EOF
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
        listen $LAB_ADDR:$V_HTTP_PORT;
        server_name localhost;
        root $FRONTEND_ROOT;
        index index.php;

        location ~ \.php\$ {
            fastcgi_pass unix:$V_PHP_FPM_SOCK;
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
}

configure_frontend() {
    if frontend_conf | write_if_changed "$(hp "$FRONTEND_CONF")" 0640 www-data; then
        log "frontend: wrote $(hp "$FRONTEND_CONF")"
    fi
    NGINX_CHANGED=0
    if nginx_conf | write_if_changed "$(hp "$NGINX_CONF")" 0644; then
        NGINX_CHANGED=1
        log "nginx: wrote $(hp "$NGINX_CONF")"
    fi
}

# Generate the frontend's locale where PHP runs (the host for 6.0, the root for 7.0), once:
# Zabbix draws graphs only when setlocale() finds the user's language (en_US by default).
configure_locale() {
    local gen
    if vrun locale -a 2>/dev/null | grep -qix "${FRONTEND_LOCALE/UTF-8/utf8}"; then
        log "locale: $FRONTEND_LOCALE present"
        return 0
    fi
    gen=$(hp /etc/locale.gen)
    if ! grep -qx "$FRONTEND_LOCALE UTF-8" "$gen" 2>/dev/null; then
        printf '%s UTF-8\n' "$FRONTEND_LOCALE" >>"$gen"
    fi
    log "locale: generating $FRONTEND_LOCALE"
    vrun locale-gen >&2
}

php_running() { live_pid "$V_PHP_FPM_PID" php-fpm >/dev/null; }
nginx_running() { live_pid "$NGINX_PID" nginx >/dev/null; }

# The epoch second process $1 started.
proc_started() {
    local ticks
    ticks=$(awk '{ print $22 }' "/proc/$1/stat") || return 1
    printf '%s\n' $(($(awk '$1 == "btime" { print $2 }' /proc/stat) + ticks / $(getconf CLK_TCK)))
}

start_php() {
    local pid archive
    archive=$(hp /usr/lib/locale/locale-archive)
    # glibc looks for the locale archive once per process: a php-fpm started before the
    # frontend's locale was generated never finds it. Restarted once, then it does.
    if pid=$(live_pid "$V_PHP_FPM_PID" php-fpm) && [[ -f $archive ]] &&
        (($(stat -c %Y "$archive") >= $(proc_started "$pid"))); then
        log "php-fpm: restarting (it started before the locale $FRONTEND_LOCALE was generated)"
        stop_php
    fi
    if php_running; then
        log "php-fpm: running"
        return 0
    fi
    vrun install -d -o www-data -g www-data -m 0755 "$RUN_PHP"
    log "php-fpm: starting"
    start_daemon root "$V_PHP_FPM_BIN" -D
}

start_nginx() {
    vrun install -d -m 0755 "$NGINX_LOG_DIR"
    if nginx_running; then
        if [[ $NGINX_CHANGED == 1 ]]; then
            vrun nginx -t -q -c "$NGINX_CONF"
            vrun nginx -c "$NGINX_CONF" -s reload
            log "nginx: running (configuration reloaded)"
        else
            log "nginx: running"
        fi
        return 0
    fi
    log "nginx: starting on $LAB_ADDR:$V_HTTP_PORT"
    start_daemon root nginx -c "$NGINX_CONF"
}

stop_php() { stop_pidfile "$V_PHP_FPM_PID" php-fpm php-fpm; }
stop_nginx() { stop_pidfile "$NGINX_PID" nginx nginx; }

api_version() {
    curl -sS --max-time 5 -H 'Content-Type: application/json-rpc' \
        -d '{"jsonrpc":"2.0","method":"apiinfo.version","params":{},"id":1}' "$V_API_URL" 2>/dev/null |
        "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["result"])' 2>/dev/null
}

wait_api() {
    local deadline=$((SECONDS + READY_TIMEOUT)) v
    log "api: waiting for $V_API_URL"
    while ((SECONDS < deadline)); do
        if v=$(api_version) && [[ $v == "$V".* ]]; then
            log "api: version $v"
            return 0
        fi
        sleep 0.2
    done
    die "API at $V_API_URL not ready after ${READY_TIMEOUT}s (last apiinfo.version: '${v:-}'); see $(hp "$NGINX_LOG_DIR")/concierge-lab.error.log"
}

# ---- zabbix_agentd ---------------------------------------------------------------------------------------
agent_running() { live_pid "$AGENT_PID" zabbix_agentd >/dev/null; }

configure_agent() {
    local conf
    conf=$(hp "$AGENT_CONF")
    grep -Eq "^[[:space:]]*Include=${AGENT_CONF_D}/?(\*\.conf)?[[:space:]]*$" "$conf" ||
        printf '\nInclude=%s/*.conf\n' "$AGENT_CONF_D" >>"$conf"
    if write_if_changed "$(hp "$AGENT_LAB_CONF")" 0644 <<EOF; then
# Written by Concierge scripts/zabbix-lab.sh
ListenIP=$LAB_ADDR
ListenPort=$V_AGENT_PORT
Hostname=$LAB_HOST
Server=$LAB_ADDR
ServerActive=$LAB_ADDR:$V_TRAPPER_PORT
AllowKey=system.run[*]
Timeout=3
UserParameter=concierge.lab.echo[*],echo "\$1"
EOF
        log "zabbix_agentd: wrote $(hp "$AGENT_LAB_CONF")"
        if agent_running; then
            stop_agent
        fi
    fi
}

start_agent() {
    if agent_running; then
        log "zabbix_agentd: running"
        return 0
    fi
    vrun install -d -o "$RUN_USER" -g "$RUN_USER" -m 0755 "$RUN_ZABBIX" "$(dirname "$AGENT_LOG")"
    log "zabbix_agentd: starting on $LAB_ADDR:$V_AGENT_PORT"
    start_daemon "$RUN_USER" "$AGENT_BIN" -c "$AGENT_CONF"
}

stop_agent() { stop_pidfile "$AGENT_PID" zabbix_agentd zabbix_agentd; }

wait_agent() {
    local deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        tcp_open "$LAB_ADDR" "$V_AGENT_PORT" && return 0
        sleep 0.2
    done
    die "agent on $LAB_ADDR:$V_AGENT_PORT not listening after ${READY_TIMEOUT}s"
}

# ---- API setup: group, host, stock host ---------------------------------------------------------------
# Run the Python code on stdin against the current version's API, after a prelude that logs in and
# defines call(method, params) and note(msg) (for a change it made); it prints "changed" or
# "unchanged". Settings reach the code as ZLAB_* environment variables.
api_py_prelude() {
    cat <<'PY'
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
PY
}

api_python() {
    local program
    program=$(printf '%s\n' "$(api_py_prelude)" "$(cat)" \
        'call("user.logout", [])' 'print("changed" if changed else "unchanged")')
    ZLAB_API_URL=$V_API_URL ZLAB_API_USER=$API_USER ZLAB_API_PASSWORD=$API_PASSWORD \
        "$PYTHON" -c "$program"
}

api_setup() {
    log "api: ensuring group '$LAB_GROUP', host '$LAB_HOST', stock host '$STOCK_HOST' disabled"
    ZLAB_GROUP=$LAB_GROUP ZLAB_HOST=$LAB_HOST ZLAB_STOCK_HOST=$STOCK_HOST \
        ZLAB_ADDR=$LAB_ADDR ZLAB_AGENT_PORT=$V_AGENT_PORT api_python <<'PY' | reload_if_changed
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
PY
}

# Read what api_python printed: after a change, make the server see it now instead of at the next
# CacheUpdateFrequency tick.
reload_if_changed() {
    [[ $(cat) == changed ]] || return 0
    log "zabbix_server: config_cache_reload"
    vrun "$SERVER_BIN" -c "$SERVER_CONF" -R config_cache_reload >/dev/null
}

# ---- distributed Zabbix: HA node b and proxies (issue #14) ------------------------------------------------
# Each version's server is node a of a two-node HA cluster on its database; node b runs beside it on
# its own port and is standby while a is active (a standby listens on no port, so clients fail over
# to whichever node answers). Node b runs only while an HA test needs it (node-start/node-stop), or
# always with ZLAB_HA_NODE_B=1: a standby takes over whenever node a stops, so an outage test's
# server-stop/server-start from a checkout whose script predates node b would leave node a standby
# and the lab's trapper closed. The active proxies report to both nodes. 6.0 has one proxy; 7.0 has a
# proxy group of two, which balances hosts between its members and redirects clients to the member
# that holds a host (failover after PROXY_GROUP_FAILOVER seconds), and one proxy on its own.
# zabbix-proxy-sqlite3 Conflicts with the server package, so it is extracted (apt-get download,
# dpkg -x), on the host for 6.0 and in the root for 7.0; each proxy creates its SQLite database on
# its first start. Verbs: proxy-stop|proxy-start VERSION NAME, node-stop|node-start VERSION a|b.

# Paths in a version's filesystem.
readonly PROXY_PKG_DIR=$STATE_DIR/proxy-pkg
readonly PROXY_BIN=$PROXY_PKG_DIR/usr/sbin/zabbix_proxy
readonly PROXY_DB_DIR=/var/lib/zabbix-proxy
readonly PROXY_LOG_DIR=/var/log/zabbix-proxy
readonly HA_CONF=$SERVER_CONF_D/concierge-ha.conf
readonly NODE_B_CONF=$LAB_ETC/zabbix_server_b.conf
readonly NODE_B_PID=$RUN_ZABBIX/zabbix_server_b.pid
readonly NODE_B_LOG=/var/log/zabbix-server/zabbix_server_b.log
readonly NODE_B_SOCKETS=$RUN_ZABBIX/server-b
readonly PROXY_GROUP_FAILOVER=10  # seconds, 7.0's smallest failover delay

# The distributed parts of the current version: node b's port, the proxies (short name:port;
# members of the group first), and the group's members.
dist_facts() {
    case $V in
        6.0) D_NODE_B_PORT=10053; D_PROXIES=(proxy:10052); D_GROUP_MEMBERS=() ;;
        7.0) D_NODE_B_PORT=10063; D_PROXIES=(pg-a:10071 pg-b:10072 proxy:10073); D_GROUP_MEMBERS=(pg-a pg-b) ;;
    esac
}

node_name() { printf 'concierge-lab-%s-%s\n' "$V" "$1"; }
proxy_name() { printf 'concierge-lab-%s-%s\n' "$V" "$1"; }
group_name() { ((${#D_GROUP_MEMBERS[@]})) && printf 'concierge-lab-%s-group\n' "$V"; return 0; }
proxy_conf() { printf '%s/proxy-%s.conf\n' "$LAB_ETC" "$1"; }
proxy_pid() { printf '%s/proxy-%s.pid\n' "$RUN_ZABBIX" "$1"; }
# Both nodes, as ServerActive (and a proxy's Server) lists an HA cluster.
ha_nodes() { printf '%s:%s;%s:%s\n' "$LAB_ADDR" "$V_TRAPPER_PORT" "$LAB_ADDR" "$D_NODE_B_PORT"; }

# Node a: the lab's server, named. Run before it starts; a server already running in the other
# mode (standalone, or named otherwise) is stopped, node b first so that it cannot take over.
configure_node_a() {
    dist_facts
    if printf '# Written by Concierge scripts/zabbix-lab.sh: this server is node a of an HA cluster.\nHANodeName=%s\nNodeAddress=%s:%s\n' \
        "$(node_name a)" "$LAB_ADDR" "$V_TRAPPER_PORT" | write_if_changed "$(hp "$HA_CONF")" 0640 "$RUN_USER"; then
        log "ha: wrote $(hp "$HA_CONF")"
        stop_node_b
        server_running && stop_server
    fi
    # Node a takes over only when no other node is active: a node b left active goes first.
    if node_b_running && { ! server_running || ! tcp_open "$LAB_ADDR" "$V_TRAPPER_PORT"; }; then
        log "ha: node b is active, stopping it so that node a is"
        stop_node_b
    fi
}

node_b_running() { live_pid "$NODE_B_PID" zabbix_server >/dev/null; }

# Node b: everything as node a (the stock file includes the lab's settings), then its own.
configure_node_b() {
    if write_if_changed "$(hp "$NODE_B_CONF")" 0640 "$RUN_USER" <<EOF; then
# Written by Concierge scripts/zabbix-lab.sh: node b of the lab's HA cluster, on node a's database.
Include=$SERVER_CONF
HANodeName=$(node_name b)
NodeAddress=$LAB_ADDR:$D_NODE_B_PORT
ListenPort=$D_NODE_B_PORT
PidFile=$NODE_B_PID
LogFile=$NODE_B_LOG
SocketDir=$NODE_B_SOCKETS
EOF
        log "ha: wrote $(hp "$NODE_B_CONF")"
        node_b_running && stop_node_b
    fi
    return 0
}

start_node_b() {
    if node_b_running; then
        log "ha node b: running"
        return 0
    fi
    vrun install -d -o "$RUN_USER" -g "$RUN_USER" -m 0755 "$RUN_ZABBIX" "$NODE_B_SOCKETS" "$(dirname "$NODE_B_LOG")"
    release_node "$(node_name b)"
    log "ha node b: starting ($(node_name b), $LAB_ADDR:$D_NODE_B_PORT when active)"
    start_daemon "$RUN_USER" "$SERVER_BIN" -c "$NODE_B_CONF"
}

stop_node_b() { stop_pidfile "$NODE_B_PID" zabbix_server "ha node b"; }

# zabbix-proxy-sqlite3, extracted into the version's filesystem once.
install_proxy_package() {
    local dir dl deb missing
    dir=$(hp "$PROXY_PKG_DIR")
    if [[ ! -x $dir/usr/sbin/zabbix_proxy ]]; then
        dl=$dir.download
        rm -rf "$dl" "$dir.new"
        install -d -m 0755 "$dl"
        # apt fetches as _apt where that user exists (a warning otherwise).
        vrun chown _apt "$PROXY_PKG_DIR.download" 2>/dev/null || true
        log "zabbix_proxy: downloading zabbix-proxy-sqlite3 (it conflicts with the server package: extracted, not installed)"
        if ! vrun env -C "$PROXY_PKG_DIR.download" apt-get download -qq zabbix-proxy-sqlite3 >&2; then
            vrun apt-get update -qq >&2
            vrun env -C "$PROXY_PKG_DIR.download" apt-get download -qq zabbix-proxy-sqlite3 >&2
        fi
        deb=$(compgen -G "$dl/zabbix-proxy-sqlite3_*.deb" | head -n 1) || die "zabbix_proxy: no package downloaded"
        dpkg -x "$deb" "$dir.new"
        mv "$dir.new" "$dir"
        rm -rf "$dl"
    fi
    missing=$(vrun ldd "$PROXY_BIN" | awk '/not found/ { print $1 }' | paste -sd' ')
    [[ -z $missing ]] || die "zabbix_proxy: libraries missing in the $V filesystem: $missing"
}

proxy_running() { live_pid "$(proxy_pid "$1")" zabbix_proxy >/dev/null; }

configure_proxy() {
    local short=$1 port=$2 frequency=ConfigFrequency
    [[ $V == 7.0 ]] && frequency=ProxyConfigFrequency
    if write_if_changed "$(hp "$(proxy_conf "$short")")" 0640 "$RUN_USER" <<EOF; then
# Written by Concierge scripts/zabbix-lab.sh: an active proxy of the $V lab.
ProxyMode=0
Server=$(ha_nodes)
Hostname=$(proxy_name "$short")
ListenIP=$LAB_ADDR
ListenPort=$port
LogFile=$PROXY_LOG_DIR/$short.log
PidFile=$(proxy_pid "$short")
SocketDir=$RUN_ZABBIX/proxy-$short
DBName=$PROXY_DB_DIR/$short.db
$frequency=1
DataSenderFrequency=1
Timeout=4
StartPollers=1
StartTrappers=3
LogSlowQueries=0
$([[ $V == 7.0 ]] && printf 'ProxyBufferMode=hybrid\nProxyMemoryBufferSize=16M')
EOF
        log "zabbix_proxy $short: wrote $(hp "$(proxy_conf "$short")")"
        proxy_running "$short" && stop_proxy "$short"
    fi
    return 0
}

start_proxy() {
    local short=$1
    if proxy_running "$short"; then
        log "zabbix_proxy $short: running"
        return 0
    fi
    vrun install -d -o "$RUN_USER" -g "$RUN_USER" -m 0755 "$RUN_ZABBIX" "$RUN_ZABBIX/proxy-$short" \
        "$PROXY_DB_DIR" "$PROXY_LOG_DIR"
    log "zabbix_proxy $short: starting ($(proxy_name "$short") on $LAB_ADDR:${2:-?})"
    start_daemon "$RUN_USER" "$PROXY_BIN" -c "$(proxy_conf "$short")"
}

stop_proxy() { stop_pidfile "$(proxy_pid "$1")" zabbix_proxy "zabbix_proxy $1"; }

wait_port() {
    local port=$1 what=$2 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        tcp_open "$LAB_ADDR" "$port" && return 0
        sleep 0.2
    done
    die "$what on $LAB_ADDR:$port not listening after ${READY_TIMEOUT}s"
}

# The proxies (and 7.0's group) in the server's configuration, as the proxies are configured.
api_dist_setup() {
    local members=() p
    for p in "${D_GROUP_MEMBERS[@]}"; do
        members+=("$(proxy_name "$p")")
    done
    ZLAB_VERSION=$V ZLAB_ADDR=$LAB_ADDR ZLAB_PROXIES="${D_PROXIES[*]}" ZLAB_PREFIX="concierge-lab-$V-" \
        ZLAB_GROUP="$(group_name)" ZLAB_MEMBERS="${members[*]}" ZLAB_FAILOVER="${PROXY_GROUP_FAILOVER}s" \
        api_python <<'PY' | reload_if_changed
v7 = os.environ["ZLAB_VERSION"] == "7.0"
group, members = os.environ["ZLAB_GROUP"], os.environ["ZLAB_MEMBERS"].split()
groupid = None
if group:
    want = {"failover_delay": os.environ["ZLAB_FAILOVER"], "min_online": "1"}
    found = call("proxygroup.get", {"output": ["proxy_groupid", "failover_delay", "min_online"],
                                    "filter": {"name": [group]}})
    if not found:
        groupid = call("proxygroup.create", {"name": group, **want})["proxy_groupids"][0]
        note(f"created proxy group {group} ({groupid})")
    else:
        groupid = found[0]["proxy_groupid"]
        if any(found[0][k] != v for k, v in want.items()):
            call("proxygroup.update", {"proxy_groupid": groupid, **want})
            note(f"updated proxy group {group}")
for entry in os.environ["ZLAB_PROXIES"].split():
    short, port = entry.split(":")
    name = os.environ["ZLAB_PREFIX"] + short
    if v7:
        want = {"operating_mode": "0", "proxy_groupid": groupid if name in members else "0",
                "local_address": os.environ["ZLAB_ADDR"] if name in members else "",
                "local_port": port if name in members else "10051"}
        found = call("proxy.get", {"output": ["proxyid", *want], "filter": {"name": [name]}})
        if not found:
            made = call("proxy.create", {"name": name, **want})["proxyids"][0]
            note(f"created proxy {name} ({made})")
        elif any(found[0][k] != v for k, v in want.items()):
            call("proxy.update", {"proxyid": found[0]["proxyid"], **want})
            note(f"updated proxy {name}")
    else:
        found = call("proxy.get", {"output": ["proxyid", "status"], "filter": {"host": [name]}})
        if not found:
            made = call("proxy.create", {"host": name, "status": 5})["proxyids"][0]
            note(f"created proxy {name} ({made})")
        elif found[0]["status"] != "5":
            call("proxy.update", {"proxyid": found[0]["proxyid"], "status": 5})
            note(f"made proxy {name} active")
PY
}

# After the lab's own parts are up: node b, the proxies and their objects in the API.
up_distributed() {
    dist_facts
    local p
    configure_node_b
    if [[ $ZLAB_HA_NODE_B == 1 ]]; then
        start_node_b
    elif node_b_running; then
        log "ha node b: stopping it (ZLAB_HA_NODE_B=0: the HA tests start it when they need it)"
        stop_node_b
    fi
    install_proxy_package
    api_dist_setup
    for p in "${D_PROXIES[@]}"; do
        configure_proxy "${p%%:*}" "${p##*:}"
        start_proxy "${p%%:*}" "${p##*:}"
    done
    for p in "${D_PROXIES[@]}"; do
        wait_port "${p##*:}" "zabbix_proxy ${p%%:*}"
    done
}

# Before the lab's own parts stop: the proxies, then node b (so that it cannot take over from a).
down_distributed() {
    dist_facts
    local i
    for ((i = ${#D_PROXIES[@]} - 1; i >= 0; i--)); do
        stop_proxy "${D_PROXIES[i]%%:*}"
    done
    stop_node_b
}

status_distributed() {
    dist_facts
    local ok=0 p short port
    if node_b_running; then
        if tcp_open "$LAB_ADDR" "$D_NODE_B_PORT"; then line "ha node b" "active ($LAB_ADDR:$D_NODE_B_PORT)"; else line "ha node b" standby; fi
    elif [[ $ZLAB_HA_NODE_B == 1 ]]; then
        line "ha node b" stopped; ok=1
    else
        line "ha node b" "stopped (started by the HA tests; ZLAB_HA_NODE_B=1 keeps it up)"
    fi
    for p in "${D_PROXIES[@]}"; do
        short=${p%%:*} port=${p##*:}
        if proxy_running "$short" && tcp_open "$LAB_ADDR" "$port"; then
            line "proxy $short" "running ($LAB_ADDR:$port)"
        else
            line "proxy $short" stopped; ok=1
        fi
    done
    return "$ok"
}

env_distributed() {
    dist_facts
    local p solo= members=() names=()
    for p in "${D_PROXIES[@]}"; do
        if [[ " ${D_GROUP_MEMBERS[*]} " == *" ${p%%:*} "* ]]; then
            members+=("$LAB_ADDR:${p##*:}")
            names+=("$(proxy_name "${p%%:*}")")
        else
            solo=${p##*:}
        fi
    done
    assign ZABBIX_HA_NODES "$(ha_nodes)"
    assign ZABBIX_HA_NODE_NAMES "$(node_name a);$(node_name b)"
    assign ZABBIX_PROXY "$LAB_ADDR:$solo"
    assign ZABBIX_PROXY_NAME "$(proxy_name proxy)"
    assign ZABBIX_PROXY_GROUP "$(group_name)"
    assign ZABBIX_PROXY_GROUP_MEMBERS "$(IFS=,; printf '%s' "${members[*]}")"
    assign ZABBIX_PROXY_GROUP_MEMBER_NAMES "$(IFS=,; printf '%s' "${names[*]}")"
    assign ZABBIX_PROXY_GROUP_FAILOVER_DELAY "$([[ -n $(group_name) ]] && echo "$PROXY_GROUP_FAILOVER")"
}

# proxy-stop|proxy-start VERSION NAME, node-stop|node-start VERSION a|b: one part, for the tests
# that fail it over. Starting a node does not wait for it: it may come up as standby.
dist_verb() {
    local verb=$1 p short= port=
    (($# == 3)) || usage
    facts "$2"
    dist_facts
    case $verb in
        proxy-*)
            for p in "${D_PROXIES[@]}"; do
                [[ $(proxy_name "${p%%:*}") == "$3" ]] && short=${p%%:*} port=${p##*:}
            done
            [[ -n $short ]] || die "no proxy '$3' in the $V lab"
            if [[ $verb == proxy-stop ]]; then
                stop_proxy "$short"
            else
                start_proxy "$short" "$port"
                wait_port "$port" "zabbix_proxy $short"
            fi
            ;;
        node-stop)
            case $3 in a) stop_server ;; b) stop_node_b ;; *) usage ;; esac ;;
        node-start)
            case $3 in a) start_server ;; b) start_node_b ;; *) usage ;; esac ;;
        *) usage ;;
    esac
}

# ---- one version -----------------------------------------------------------------------------------------
summary() {
    cat <<EOF
Zabbix $V lab is up:
  API        $V_API_URL  ($API_USER / $API_PASSWORD)
  trapper    $LAB_ADDR:$V_TRAPPER_PORT   ($V_SENDER -z $LAB_ADDR -p $V_TRAPPER_PORT -s $LAB_HOST -k KEY -o VALUE)
  agent      $([[ $ZLAB_AGENT == 1 ]] && echo "$LAB_ADDR:$V_AGENT_PORT" || echo "disabled (ZLAB_AGENT=0)")
  postgres   $LAB_ADDR:$PG_PORT   (db/user/password $V_DB/$V_DB_USER/$V_DB_PASSWORD)
  host       $LAB_HOST in group $LAB_GROUP
  facts      scripts/zabbix-lab.sh env $V
EOF
}

up_version() {
    facts "$1"
    if [[ $V == 7.0 ]]; then
        prepare_root
    fi
    start_postgres
    setup_database
    configure_server
    configure_tls
    configure_scaling
    configure_node_a
    start_server
    configure_frontend
    configure_locale
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
    up_distributed
    summary
}

down_version() {
    facts "$1"
    if [[ $V == 7.0 ]] && ! root_built; then
        log "root: not built"
        return 0
    fi
    down_distributed
    stop_agent
    stop_server
    stop_nginx
    stop_php
    if [[ $V == 7.0 ]]; then
        stop_root_leftovers
    fi
}

status_version() {
    facts "$1"
    local ok=0 v
    line() { printf '%s %-14s %s\n' "$V" "$1" "$2"; }
    if [[ $V == 7.0 ]]; then
        if root_built; then line root "built ($ROOT_70)"; else line root "not built"; ok=1; fi
        line shares "$(paste -sd' ' "$STATE_DIR/7.0/shares.active" 2>/dev/null || echo none)"
    fi
    if command -v pg_ctlcluster >/dev/null && pg_running; then line postgresql running; else line postgresql stopped; ok=1; fi
    if server_running; then line zabbix_server running; else line zabbix_server stopped; ok=1; fi
    if tcp_open "$LAB_ADDR" "$V_TRAPPER_PORT"; then line trapper "running ($LAB_ADDR:$V_TRAPPER_PORT)"; else line trapper stopped; ok=1; fi
    if php_running; then line php-fpm running; else line php-fpm stopped; ok=1; fi
    if nginx_running; then line nginx "running ($LAB_ADDR:$V_HTTP_PORT)"; else line nginx stopped; ok=1; fi
    if v=$(api_version) && [[ $v == "$V".* ]]; then line api "running ($v)"; else line api stopped; ok=1; fi
    if [[ $ZLAB_AGENT == 1 ]]; then
        if agent_running; then line zabbix_agentd "running ($LAB_ADDR:$V_AGENT_PORT)"; else line zabbix_agentd stopped; ok=1; fi
    else
        line zabbix_agentd "disabled (ZLAB_AGENT=0)"
    fi
    status_distributed || ok=1
    return "$ok"
}

reset_version() {
    facts "$1"
    down_distributed
    stop_server
    restore_database
    # up recreates anything missing, starts the server and redoes the API setup.
    up_version "$1"
}

# The facts of version $1 as shell assignments, for tests, benchmarks and people.
env_version() {
    facts "$1"
    local shared=/
    if [[ $V == 7.0 ]]; then
        # What the running daemons see, else what their next start will mount.
        if ns_holder >/dev/null && [[ -r $STATE_DIR/7.0/shares.active ]]; then
            shared=$(paste -sd: "$STATE_DIR/7.0/shares.active")
        else
            shared=$(shares_70 | paste -sd:)
        fi
    fi
    assign() {
        [[ $2 != *"'"* ]] || die "env: $1 contains a quote"
        printf "%s='%s'\n" "$1" "$2"
    }
    assign ZABBIX_VERSION "$V"
    assign ZABBIX_API_URL "$V_API_URL"
    assign ZABBIX_FRONTEND_URL "http://$LAB_ADDR:$V_HTTP_PORT/"
    assign ZABBIX_SERVER "$LAB_ADDR:$V_TRAPPER_PORT"
    assign ZABBIX_USER "$API_USER"
    assign ZABBIX_PASSWORD "$API_PASSWORD"
    assign ZABBIX_AGENT "$LAB_ADDR:$V_AGENT_PORT"
    assign ZABBIX_LAB_HOST "$LAB_HOST"
    assign ZABBIX_LAB_GROUP "$LAB_GROUP"
    assign ZABBIX_SENDER "$V_SENDER"
    assign ZABBIX_AGENTD "$V_AGENTD"
    assign ZABBIX_GET "$V_GET"
    assign ZABBIX_ROOT "${V_ROOT:-/}"
    assign ZABBIX_SHARED "$shared"
    assign ZABBIX_SERVER_CONF "$(hp "$SERVER_CONF")"
    assign ZABBIX_SERVER_LOG "$(hp "$SERVER_LOG")"
    assign ZABBIX_SERVER_PID_FILE "$(hp "$SERVER_PID")"
    assign ZABBIX_LAB_STATE_DIR "$STATE_DIR"
    assign ZABBIX_AGENT_LOG "$(hp "$AGENT_LOG")"
    assign ZABBIX_GLOBAL_SCRIPTS "$V_GLOBAL_SCRIPTS"
    assign ZABBIX_RUN_USER "$RUN_USER"
    assign ZABBIX_DB "$V_DB"
    assign ZABBIX_DB_SERVER "$LAB_ADDR:$PG_PORT"
    env_distributed
}

# ---- verbs -----------------------------------------------------------------------------------------------
# The lab owns the host's Zabbix 6.0 once it has installed or configured it (its own server
# config, or the ownership mark). Anything else found on the host is someone's Zabbix: `up` and
# `reset` rewrite its configuration and database, so they refuse unless ZLAB_TAKE_OVER=1.
readonly OWNER_MARK=$STATE_DIR/owns-host-zabbix

foreign_zabbix() {
    [[ -e $OWNER_MARK || -e $SERVER_LAB_CONF ]] && return 1
    [[ -e /etc/zabbix/zabbix_server.conf || -e /etc/zabbix/zabbix_agentd.conf ]] && return 0
    dpkg-query -W -f='${Status}\n' zabbix-server-pgsql zabbix-server-mysql zabbix-agent \
        zabbix-agent2 2>/dev/null | grep -q '^install ok installed$'
}

guard_host_zabbix() {
    if foreign_zabbix; then
        if [[ ${ZLAB_TAKE_OVER:-0} != 1 ]]; then
            die "this machine already has a Zabbix the lab did not install (/etc/zabbix): the lab \
would rewrite its configuration and database. Run on a machine of its own, or set \
ZLAB_TAKE_OVER=1 to let it take that Zabbix over"
        fi
        log "ZLAB_TAKE_OVER=1: taking over the Zabbix found on this machine"
    fi
    install -d -m 0755 "$STATE_DIR"
    : >"$OWNER_MARK"
}

usage() {
    cat >&2 <<EOF
usage: $0 up|down|status|reset [6.0|7.0]
       $0 server-stop|server-start|env 6.0|7.0
       $0 proxy-stop|proxy-start 6.0|7.0 NAME      node-stop|node-start 6.0|7.0 a|b
environment: ZLAB_AGENT=1|0, ZLAB_HA_NODE_B=0|1, ZLAB_SHARE="DIR ...", ZLAB_MIRROR=URL
EOF
    exit 2
}

# Serialise the verbs that change the lab: up/down/reset take the lab's lock and then the lock of
# each version $@ (in order, so no two runs wait on each other in a circle); server-stop and
# server-start take only their version's, so two versions' outage tests do not wait on each other.
take_lock() {
    local v fd
    install -d -m 0755 "$STATE_DIR"
    if [[ ${1:-} != --version-only ]]; then
        exec 9>"$STATE_DIR/lock"
        flock 9
    else
        shift
    fi
    for v in "$@"; do
        fd=7
        [[ $v == 7.0 ]] && fd=8
        eval "exec $fd>\"\$STATE_DIR/lock.\$v\""
        flock "$fd"
    done
}

main() {
    [[ $ZLAB_AGENT == 0 || $ZLAB_AGENT == 1 ]] || die "ZLAB_AGENT must be 0 or 1"
    [[ $ZLAB_HA_NODE_B == 0 || $ZLAB_HA_NODE_B == 1 ]] || die "ZLAB_HA_NODE_B must be 0 or 1"
    (($# >= 1)) || usage
    local verb=$1 versions=("${VERSIONS[@]}") v rc=0 extra=()
    shift
    case $verb in
        __ns-chroot) facts 7.0; mount_root_fs; exec chroot "$ROOT_70" "$@" ;;
        __root-apt) facts 7.0; root_apt "$@"; return ;;
        proxy-stop | proxy-start | node-stop | node-start)
            require_root; take_lock; dist_verb "$verb" "$@"; return ;;
    esac
    (($# <= 1)) || usage
    if (($# == 1)); then
        [[ $1 == 6.0 || $1 == 7.0 ]] || usage
        versions=("$1")
    fi
    case $verb in
        env | server-stop | server-start) (($# == 1)) || usage ;;
    esac
    case $verb in
        env) env_version "$1" ;;
        status)
            for v in "${versions[@]}"; do
                status_version "$v" || rc=1
            done
            return "$rc"
            ;;
        up)
            require_root
            take_lock "${versions[@]}"
            facts 6.0  # the host packages are needed by both (PostgreSQL, curl, python3)
            guard_host_zabbix
            mapfile -t extra < <(compose_package)
            install_host_packages "${HOST_PACKAGES[@]}" "${extra[@]}"
            for v in "${versions[@]}"; do
                up_version "$v"
            done
            ;;
        down)
            require_root
            take_lock "${versions[@]}"
            for v in "${versions[@]}"; do
                down_version "$v"
            done
            if (($# == 0)) && command -v pg_ctlcluster >/dev/null; then
                V=
                stop_postgres
            fi
            ;;
        reset)
            require_root
            take_lock "${versions[@]}"
            facts 6.0
            guard_host_zabbix
            install_host_packages "${HOST_PACKAGES[@]}"
            start_postgres
            for v in "${versions[@]}"; do
                reset_version "$v"
            done
            ;;
        # Node b first and last: stopped before node a, it cannot take over from it.
        server-stop) require_root; take_lock --version-only "$1"; facts "$1"; dist_facts; stop_node_b; stop_server ;;
        server-start) require_root; take_lock --version-only "$1"; facts "$1"; dist_facts; start_server; wait_trapper
            if [[ $ZLAB_HA_NODE_B == 1 ]]; then start_node_b; fi ;;
        *) usage ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
