#!/usr/bin/env bash
# Pristine Debian roots for the package tests, made once per machine and cached.
#
#   scripts/debian-root.sh pristine SUITE   print the path of the pristine root of SUITE
#                                           (bookworm, trixie), making it first if needed
#   scripts/debian-root.sh path SUITE       print where it is (or would be); make nothing
#
# A pristine root is `debootstrap --variant=minbase SUITE` from the Debian mirror this machine
# uses (the one in /etc/apt/sources.list.d/; CONCIERGE_DEBIAN_MIRROR overrides it) with
# man-db and logrotate installed, its package lists fetched, and the .debs of zabbix-agent
# downloaded but not installed: a copy can install the agent without the network, and
# nothing in it is started (no policy-rc.d either: the tests add one where they need it).
# Tests copy it and never change it. Cache: $CONCIERGE_ROOT_CACHE, default
# /var/cache/concierge-test/roots. Needs root; installs debootstrap if it is missing.
set -euo pipefail
export LC_ALL=C

readonly CACHE=${CONCIERGE_ROOT_CACHE:-/var/cache/concierge-test/roots}
# Bump when the recipe changes: roots made by an older one are then made anew.
readonly RECIPE=1
readonly INSTALL=(man-db logrotate)
readonly DOWNLOAD=(zabbix-agent)

log() { printf 'debian-root: %s\n' "$*" >&2; }
die() { printf 'debian-root: error: %s\n' "$*" >&2; exit 1; }

# The http(s) URI of the stanza (deb822 or one-line) that serves Debian's main archive.
mirror() {
    if [[ -n ${CONCIERGE_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "$CONCIERGE_DEBIAN_MIRROR"
        return
    fi
    local files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list)
    awk '
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i ~ /^(bookworm|trixie|forky|sid)$/) ok = 1 }
        /^[[:space:]]*$/ { if (ok && uri) { print uri; exit } ok = 0; uri = "" }
        /^deb[[:space:]]/ && $3 ~ /^(bookworm|trixie|forky|sid)$/ { print $2; exit }
        END { if (ok && uri) print uri }
    ' "${files[@]}" 2>/dev/null | head -n1
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1 || {
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null
    }
}

make_root() {
    local suite=$1 root=$2 url tmp
    url=$(mirror)
    [[ -n $url ]] || die "no Debian mirror in /etc/apt/sources.list.d/ (set CONCIERGE_DEBIAN_MIRROR)"
    ensure_debootstrap
    tmp=$root.tmp.$$
    rm -rf "$tmp"
    local t0=$SECONDS
    log "debootstrap --variant=minbase $suite from $url (once per machine)"
    # Not --include: debootstrap's own ordering fails on trixie's logrotate (it pulls systemd).
    debootstrap --variant=minbase "$suite" "$tmp" "$url" >"$tmp.log" 2>&1 ||
        die "debootstrap failed; see $tmp.log"
    cp /etc/resolv.conf "$tmp/etc/resolv.conf"
    # An installed Debian has one (the installer writes it); debootstrap does not.
    [[ -e $tmp/etc/hosts ]] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$tmp/etc/hosts"
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get update >>"$tmp.log" 2>&1 ||
        die "apt-get update in the $suite root failed; see $tmp.log"
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${INSTALL[@]}" >>"$tmp.log" 2>&1 ||
        die "installing ${INSTALL[*]} in the $suite root failed; see $tmp.log"
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y --download-only \
        --no-install-recommends "${DOWNLOAD[@]}" >>"$tmp.log" 2>&1 ||
        die "downloading ${DOWNLOAD[*]} in the $suite root failed; see $tmp.log"
    rm -f "$tmp.log"
    mv "$tmp" "$root"
    log "pristine $suite root ready in $((SECONDS - t0)) s: $root"
}

[[ $# -eq 2 ]] || die "usage: scripts/debian-root.sh pristine|path SUITE"
verb=$1 suite=$2
[[ $suite =~ ^[a-z]+$ ]] || die "not a suite: $suite"
root=$CACHE/$suite.$RECIPE
case $verb in
path) printf '%s\n' "$root" ;;
pristine)
    [[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot)"
    install -d -m 0755 "$CACHE"
    # One maker per suite; others wait for it.
    exec 9>"$root.lock"
    flock 9
    [[ -d $root ]] || make_root "$suite" "$root"
    printf '%s\n' "$root"
    ;;
*) die "unknown verb $verb" ;;
esac
