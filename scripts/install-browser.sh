#!/usr/bin/env bash
# Installs the headless browser the frontend test drives (tests/frontend_lab.rs): Debian's
# chromium-headless-shell (Chromium's headless build, no display needed) and a font for the
# page's text. Idempotent; quick when it is there. It starts nothing.
set -euo pipefail

browser=/usr/bin/chromium-headless-shell
need_apt=()
[[ -x $browser ]] || need_apt+=(chromium-headless-shell)
[[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need_apt+=(fonts-dejavu-core)
if ((${#need_apt[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "install-browser: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  # Other jobs may hold the dpkg lock: wait for it rather than fail.
  apt_get=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if ! apt-cache policy chromium-headless-shell 2>/dev/null | grep -q 'Candidate:.*[0-9]'; then
    "${apt_get[@]}" update
  fi
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install --no-install-recommends "${need_apt[@]}"
fi
echo "install-browser: $("$browser" --version 2>/dev/null | head -1) ready"
