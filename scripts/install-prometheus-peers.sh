#!/usr/bin/env bash
# Installs the real Prometheus peers the tests run against (none of them written here):
# Debian's prometheus (2.42, with promtool) and prometheus-node-exporter (1.5), and PyPI's
# prometheus-client for the python3 on PATH. Idempotent; quick when everything is there.
# It starts no services: the tests start their own instances on 127.0.0.1:9190-9193.
set -euo pipefail

need_apt=()
for pair in prometheus:/usr/bin/prometheus prometheus:/usr/bin/promtool \
            prometheus-node-exporter:/usr/bin/prometheus-node-exporter; do
  pkg=${pair%%:*} file=${pair#*:}
  [[ -x $file ]] || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "install-prometheus-peers: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  # Other jobs may hold the dpkg lock: wait for it rather than fail.
  apt_get=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if ! apt-cache policy prometheus 2>/dev/null | grep -q Candidate:.*[0-9]; then
    "${apt_get[@]}" update
  fi
  # Keep Debian's prometheus (0.0.0.0:9090) and node exporter (:9100) services from starting
  # during the install where no policy-rc.d says so already: the tests start their own.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install --no-install-recommends \
    $(printf '%s\n' "${need_apt[@]}" | sort -u)
fi

if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install --quiet prometheus-client \
    || python3 -m pip install --quiet --break-system-packages prometheus-client
fi
python3 -c 'import prometheus_client'
echo "install-prometheus-peers: prometheus $(/usr/bin/prometheus --version 2>&1 | head -1 | awk '{print $3}'), node exporter $(/usr/bin/prometheus-node-exporter --version 2>&1 | head -1 | awk '{print $3}'), prometheus_client ready"
