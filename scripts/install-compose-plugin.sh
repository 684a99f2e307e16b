#!/usr/bin/env bash
# Installs Docker Compose v2 as the Docker CLI plugin (`docker compose`), from Debian 13's
# docker-compose package (2.x), so that the scale tests run compose v2 beside Debian 12's v1.
#
# On Debian 13 or later that is `apt-get install docker-compose`. On Debian 12, whose
# docker-compose is v1 (kept at /usr/bin/docker-compose: the tests run both), the trixie .deb
# is fetched by apt from the mirror this machine already uses, through a private sources list,
# lists and cache in a temporary directory (the host's apt sources and state are not touched),
# and only its plugin binary is installed, as
# /usr/local/lib/docker/cli-plugins/docker-compose (a directory every docker CLI searches).
# Idempotent; quick when `docker compose version` answers already. Needs root to install.
set -euo pipefail
export LC_ALL=C

readonly PLUGIN_DIR=${CONCIERGE_COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf 'install-compose-plugin: %s\n' "$*" >&2; }
die() { printf 'install-compose-plugin: error: %s\n' "$*" >&2; exit 1; }

installed() {
    local v
    v=$(docker compose version --short 2>/dev/null) || return 1
    [[ $v == 2.* || $v == v2.* ]] || return 1
    echo "install-compose-plugin: docker compose $v ready"
}

# The http(s) URI of the apt stanza (deb822 or one-line) that serves Debian's main archive.
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

installed && exit 0
command -v docker >/dev/null || die "no docker CLI on PATH (install docker.io first)"
[[ $(id -u) -eq 0 ]] || die "need root to install the compose plugin"

codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
apt_get=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
if [[ $codename != bookworm ]]; then
    # Debian 13 and later: their docker-compose is v2, the plugin itself.
    log "apt-get install docker-compose ($codename)"
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install --no-install-recommends docker-compose >&2 || {
        "${apt_get[@]}" update >&2
        DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install --no-install-recommends docker-compose >&2
    }
    installed || die "docker-compose from $codename does not answer as docker compose v2"
    exit 0
fi

url=$(mirror)
[[ -n $url ]] || die "no Debian mirror in /etc/apt/sources.list.d/ (set CONCIERGE_DEBIAN_MIRROR)"
gpg_has_trixie() { [[ -r $KEYRING ]] && grep -q 'trixie' < <(gpg --show-keys "$KEYRING" 2>/dev/null); }
if command -v gpg >/dev/null && ! gpg_has_trixie; then
    # An older Debian 12 image may lack trixie's key (the keyring has it from 2023.3+deb12u2).
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install --only-upgrade debian-archive-keyring >&2 || true
fi

tmp=$(mktemp -d /tmp/compose-plugin.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/parts" "$tmp/deb"
printf 'deb [signed-by=%s] %s trixie main\n' "$KEYRING" "$url" >"$tmp/sources.list"
apt_trixie=(apt-get -q
    -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/parts"
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
    -o "Debug::NoLocking=1" -o "APT::Get::List-Cleanup=0")
t0=$SECONDS
log "fetching Debian 13's docker-compose from $url (trixie)"
"${apt_trixie[@]}" update >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; die "apt-get update (trixie) failed"; }
(cd "$tmp/deb" && "${apt_trixie[@]}" download docker-compose) >>"$tmp/apt.log" 2>&1 ||
    { cat "$tmp/apt.log" >&2; die "apt-get download docker-compose (trixie) failed"; }
deb=$(ls "$tmp"/deb/docker-compose_*.deb)
dpkg-deb -x "$deb" "$tmp/x"
bin=$tmp/x/usr/libexec/docker/cli-plugins/docker-compose
[[ -x $bin ]] || die "$(basename "$deb") has no usr/libexec/docker/cli-plugins/docker-compose"
install -d -m 0755 "$PLUGIN_DIR"
# Replace it whole (a running docker may be executing the old one).
install -m 0755 "$bin" "$PLUGIN_DIR/docker-compose.new.$$"
mv -f "$PLUGIN_DIR/docker-compose.new.$$" "$PLUGIN_DIR/docker-compose"
log "installed $(basename "$deb") as $PLUGIN_DIR/docker-compose in $((SECONDS - t0)) s"
installed || die "the plugin does not answer: docker compose version"
