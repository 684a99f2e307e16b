#!/usr/bin/env bash
# Turn a staged `make install PREFIX=/usr DESTDIR=STAGE` tree into the Concierge .deb with
# dpkg-deb: control file, maintainer scripts, conffiles, copyright and changelog come from
# packaging/debian/. Called by `make deb`; prints the path of the package it wrote.
#
#   scripts/deb.sh STAGE OUT_DIR
#
# The binaries must be static (no ELF interpreter): one package then serves Debian 12 and 13.
set -euo pipefail
export LC_ALL=C

die() { printf 'deb: error: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 2 ]] || die "usage: scripts/deb.sh STAGE OUT_DIR"
stage=$1 out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/packaging/debian
[[ -x $stage/usr/bin/concierge-courier ]] || die "$stage has no usr/bin/concierge-courier: run make deb"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (package dpkg)"

# Static or refused: a dynamically linked binary would tie the package to one glibc.
for bin in "$stage"/usr/bin/concierge-*; do
    if LC_ALL=C readelf -l "$bin" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        die "$bin is dynamically linked (build it with make static)"
    fi
done

# Version: Cargo's, plus the commit's UTC time and revision when built from git, so that a
# later commit is a newer package.
upstream=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
[[ -n $upstream ]] || die "no version in Cargo.toml"
version=$upstream
if rev=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null); then
    when=$(TZ=UTC git -C "$root" log -1 --date=format-local:%Y%m%d.%H%M%S --format=%cd)
    version="$upstream+git$when.$rev"
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}

# Statically linked glibc must be named (Debian policy 7.8).
glibc=$(dpkg-query -W -f='${source:Version}' libc6-dev 2>/dev/null) || die "libc6-dev is not installed"

doc=$stage/usr/share/doc/concierge
install -d -m 0755 "$doc"
install -m 0644 "$src/copyright" "$doc/copyright"
install -d -m 0755 "$stage/usr/share/lintian/overrides"
install -m 0644 "$src/lintian-overrides" "$stage/usr/share/lintian/overrides/concierge"
{
    printf 'concierge (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Built from git revision %s.\n\n' "${rev:-unknown}"
    printf ' -- Concierge developers <concierge@example.org>  %s\n' \
        "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

rm -rf "$stage/DEBIAN"
install -d -m 0755 "$stage/DEBIAN"
size=$(du -sk --apparent-size "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@INSTALLED_SIZE@|$size|" \
    -e "s|@BUILT_USING@|glibc (= $glibc)|" "$src/control" >"$stage/DEBIAN/control"
install -m 0644 "$src/conffiles" "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$src/$script" "$stage/DEBIAN/$script"
done
# md5sums of every file but the conffiles (dpkg tracks those itself), for debsums.
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
    grep -vxF -f <(sed 's|^/||' "$src/conffiles") | tr '\n' '\0' | xargs -0 md5sum) \
    >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
while read -r conffile; do
    [[ -f $stage$conffile ]] || die "conffile $conffile is not in the package"
done <"$src/conffiles"

install -d "$out"
deb=$out/concierge_${version}_amd64.deb
rm -f "$out"/concierge_*_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
printf '%s\n' "$deb"
