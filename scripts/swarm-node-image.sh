#!/usr/bin/env bash
# The image of the multi-node swarm test's Docker-in-Docker nodes, built here (no registry, no
# pulls): a copy of the pristine Debian root of scripts/debian-root.sh (debootstrap, cached per
# machine) with Debian's docker.io installed, imported with `docker import`.
#
#   scripts/swarm-node-image.sh [SUITE]    build concierge-swarm-node:SUITE unless it is there
#                                          (SUITE: bookworm, the default, or trixie); print it
#
# The nodes run /usr/local/bin/dind-node (dockerd, once the cgroup hierarchies are writable),
# with /var/lib/docker on a volume of their own. Not --privileged: runc cannot grant it where the
# outer engine lacks a capability (CAP_SYS_RESOURCE on the machines seen here), so the test adds
# every capability the engine has, unconfined seccomp/AppArmor/system paths, and the entrypoint
# remounts /sys and the cgroup mounts read-write. Nothing is started while the image is built
# (a policy-rc.d says so). Rebuilt when RECIPE changes. Needs root (debootstrap, chroot).
set -euo pipefail
export LC_ALL=C

readonly RECIPE=2
readonly SUITE=${1:-bookworm}
readonly IMAGE=concierge-swarm-node:$SUITE
readonly PACKAGES=(docker.io iptables ca-certificates)

log() { printf 'swarm-node-image: %s\n' "$*" >&2; }
die() { printf 'swarm-node-image: error: %s\n' "$*" >&2; exit 1; }

[[ $SUITE =~ ^[a-z]+$ ]] || die "not a suite: $SUITE"
have=$(docker image inspect --format '{{index .Config.Labels "concierge.recipe"}}' "$IMAGE" 2>/dev/null || true)
if [[ $have == "$RECIPE" ]]; then
    printf '%s\n' "$IMAGE"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot)"
here=$(cd "$(dirname "$0")" && pwd)
t0=$SECONDS
pristine=$(bash "$here/debian-root.sh" pristine "$SUITE")
work=$(mktemp -d /var/tmp/concierge-swarm-node.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
log "copying the pristine $SUITE root"
cp -a "$pristine" "$root"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
log "installing ${PACKAGES[*]} in it"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${PACKAGES[@]}" >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; die "apt-get install failed"; }
chroot "$root" apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
cat >"$root/usr/local/bin/dind-node" <<'EOF'
#!/bin/sh
# A swarm test node: the outer engine mounts /sys and the cgroup hierarchies read-only (it
# does so unless --privileged); this engine's containers need them writable.
set -e
mount -o remount,rw /sys 2>/dev/null || echo "dind-node: /sys stays read-only" >&2
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [ -d "$d" ] || continue
    mount -o remount,rw,bind "$d" 2>/dev/null || mount -o remount,rw "$d" 2>/dev/null ||
        echo "dind-node: $d stays read-only" >&2
done
exec dockerd "$@"
EOF
chmod 755 "$root/usr/local/bin/dind-node"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/tmp/* "$root"/var/lib/docker
log "importing it as $IMAGE"
tar -C "$root" --numeric-owner -c . |
    docker import --change "LABEL concierge.recipe=$RECIPE" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENTRYPOINT ["/usr/local/bin/dind-node"]' - "$IMAGE" >/dev/null
log "$IMAGE ready in $((SECONDS - t0)) s"
printf '%s\n' "$IMAGE"
