#!/usr/bin/env bash
# The lab's TLS material (issue #12), loopback only: a CA, the servers' certificate, a client
# certificate, a second ("rogue") CA with a client certificate of its own, and a PSK, all made here
# with openssl into /etc/concierge-lab/tls (keys 0600). Tests make their own PSKs (one identity per
# test: an identity is global on a Zabbix server).
#
#   scripts/lab-tls.sh materials     make what is missing (idempotent; no server is touched)
#
# scripts/zabbix-lab.sh sources this file and calls configure_tls during `up`, after
# configure_server: it copies the CA and the server's certificate and key into the version's
# /etc/zabbix/tls and writes zabbix_server.conf.d/concierge-tls.conf (TLSCAFile, TLSCertFile,
# TLSKeyFile). When that file changes the server is stopped, so `up` starts it once with it; tests
# never restart a server for TLS. PSK needs no server setting (the key is the host's).
# Server certificates are RSA: a GnuTLS-built Zabbix accepts no ECDSA (shared/docs/zabbix-tls.md).

TLS_DIR=${TLS_DIR:-/etc/concierge-lab/tls}
readonly TLS_SERVER_DIR=/etc/zabbix/tls
readonly TLS_SERVER_CONF=/etc/zabbix/zabbix_server.conf.d/concierge-tls.conf
readonly TLS_DAYS=3650

tls_log() { printf 'lab-tls: %s\n' "$*" >&2; }

# A key (RSA 2048) and a certificate for subject $2 signed by CA $3 (or self-signed when $3 is
# empty), with the extensions $4, as files $1.key and $1.crt.
tls_make_cert() {
    local name=$1 subject=$2 ca=$3 ext=$4 extfile
    [[ -s $TLS_DIR/$name.crt && -s $TLS_DIR/$name.key ]] && return 0
    extfile=$(mktemp)
    printf '%s\n' "$ext" >"$extfile"
    (umask 077 && openssl genrsa -out "$TLS_DIR/$name.key" 2048 2>/dev/null)
    if [[ -z $ca ]]; then
        openssl req -new -x509 -key "$TLS_DIR/$name.key" -subj "$subject" -days "$TLS_DAYS" \
            -extensions v3 -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n%s\n' "$ext") \
            -out "$TLS_DIR/$name.crt"
    else
        openssl req -new -key "$TLS_DIR/$name.key" -subj "$subject" -out "$TLS_DIR/$name.csr"
        openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/$ca.crt" -CAkey "$TLS_DIR/$ca.key" \
            -CAcreateserial -days "$TLS_DAYS" -extfile "$extfile" -out "$TLS_DIR/$name.crt" 2>/dev/null
        rm -f "$TLS_DIR/$name.csr"
    fi
    rm -f "$extfile"
    chmod 0600 "$TLS_DIR/$name.key"
    chmod 0644 "$TLS_DIR/$name.crt"
    tls_log "made $TLS_DIR/$name.crt ($subject)"
}

tls_materials() {
    command -v openssl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null
    install -d -m 0755 "$TLS_DIR"
    local ca='basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign'
    tls_make_cert ca "/O=Concierge Lab/CN=Concierge Lab CA" "" "$ca"
    tls_make_cert server "/O=Concierge Lab/CN=concierge-lab-server" ca 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost'
    tls_make_cert client "/O=Concierge Lab/CN=concierge-client" ca 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'
    # Another CA nobody trusts, and a client certificate from it: the server must refuse it.
    tls_make_cert rogue-ca "/O=Elsewhere/CN=Rogue CA" "" "$ca"
    tls_make_cert rogue-client "/O=Elsewhere/CN=concierge-client" rogue-ca 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'
    if [[ ! -s $TLS_DIR/psk.key ]]; then
        (umask 077 && openssl rand -hex 32 >"$TLS_DIR/psk.key")
        tls_log "made $TLS_DIR/psk.key"
    fi
}

# For zabbix-lab.sh's `up` (its helpers hp, write_if_changed, server_running, stop_server, log
# and RUN_USER are in scope): the current version's server gets the CA and its certificate.
configure_tls() {
    tls_materials
    local changed=0 f
    for f in ca.crt server.crt server.key; do
        if write_if_changed "$(hp "$TLS_SERVER_DIR/$f")" 0640 "$RUN_USER" <"$TLS_DIR/$f"; then
            changed=1
        fi
    done
    if printf '# Written by Concierge scripts/lab-tls.sh: certificates for TLS tests (issue #12).\nTLSCAFile=%s/ca.crt\nTLSCertFile=%s/server.crt\nTLSKeyFile=%s/server.key\n' \
        "$TLS_SERVER_DIR" "$TLS_SERVER_DIR" "$TLS_SERVER_DIR" |
        write_if_changed "$(hp "$TLS_SERVER_CONF")" 0640 "$RUN_USER"; then
        changed=1
    fi
    if ((changed)); then
        log "tls: wrote $(hp "$TLS_SERVER_CONF") and $(hp "$TLS_SERVER_DIR")"
        if server_running; then
            stop_server
        fi
    fi
    return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-} in
        materials) tls_materials ;;
        *) echo "usage: $0 materials" >&2; exit 2 ;;
    esac
fi
