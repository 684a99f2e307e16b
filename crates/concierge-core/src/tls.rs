//! TLS to Zabbix servers and proxies, PSK or certificates, as `zabbix_sender` does it.
//!
//! Over OpenSSL (the `openssl` crate, vendored): rustls has no external PSK, and a Debian-built
//! (GnuTLS) Zabbix offers PSK over TLS 1.2 only (../shared/docs/zabbix-tls.md). Each mode offers
//! only its own suites, forward-secret ones first; the context is built once per run and every
//! handshake runs on a stream whose reads and writes are bounded by the run's deadline.
//! Like Zabbix, the server is identified by its CA and, optionally, its certificate's issuer
//! and subject (RFC 4514 strings, CN first), not by its address.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use openssl::error::ErrorStack;
use openssl::ssl::{
    ErrorCode, HandshakeError, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod,
    SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509NameRef, X509VerifyResult};

use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// `TLSConnect` / `--tls-connect`: how to connect to the server or proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Plain TCP (the default).
    #[default]
    Unencrypted,
    /// TLS with a pre-shared key (`--tls-psk-identity`, `--tls-psk-file`).
    Psk,
    /// TLS with certificates (`--tls-ca-file`, `--tls-cert-file`, `--tls-key-file`).
    Cert,
}

impl Mode {
    /// Parse an agent config value (`unencrypted`, `psk`, `cert`).
    pub fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "unencrypted" => Some(Mode::Unencrypted),
            "psk" => Some(Mode::Psk),
            "cert" => Some(Mode::Cert),
            _ => None,
        }
    }
}

/// The TLS settings of a run, flags and agent config combined (zabbix_sender's names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub connect: Mode,
    pub psk_identity: Option<String>,
    pub psk_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub crl_file: Option<PathBuf>,
    pub server_cert_issuer: Option<String>,
    pub server_cert_subject: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Zabbix's limits: a PSK of 128 to 2048 bits, written as 32 to 512 hex digits; an identity
/// of at most 128 bytes of UTF-8.
const PSK_MIN_HEX: usize = 32;
const PSK_MAX_HEX: usize = 512;
const PSK_IDENTITY_MAX: usize = 128;
/// Zabbix's own OpenSSL defaults, ECDHE first (forward secrecy): the server follows the
/// client's order, and OpenSSL's default order would pick PSK-AES128-GCM without it.
const PSK_CIPHERS: &str = "kECDHEPSK+AES128:kPSK+AES128";
const CERT_CIPHERS: &str = "EECDH+aRSA+AES128:RSA+aRSA+AES128";

/// Why TLS could not be set up or the handshake failed. Each kind has its own failure code, so
/// a trigger tells a wrong key from an untrusted server.
#[derive(Debug)]
pub enum TlsError {
    /// A TLS setting is missing or inconsistent, or a certificate/key file cannot be used.
    Setting(String),
    /// The PSK file cannot be read or does not hold a valid key.
    PskFile { path: PathBuf, reason: String },
    /// The TLS handshake failed (for PSK: the server closes without an alert when it does not
    /// know the identity or the key differs, so both look alike).
    Handshake {
        endpoint: String,
        mode: Mode,
        detail: String,
    },
    /// The server's certificate does not chain to the CA file (or is revoked, expired...).
    Untrusted { endpoint: String, detail: String },
    /// The server's certificate issuer or subject is not the one required.
    Mismatch {
        endpoint: String,
        what: &'static str,
        expected: String,
        got: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Setting(s) => write!(f, "TLS: {s}"),
            TlsError::PskFile { path, reason } => {
                write!(f, "TLS: PSK file {}: {reason}", path.display())
            }
            TlsError::Handshake {
                endpoint,
                mode: Mode::Psk,
                detail,
            } => write!(
                f,
                "TLS handshake with {endpoint} failed: {detail} (a PSK handshake fails this way \
                 when the server does not know the identity or its key differs)"
            ),
            TlsError::Handshake {
                endpoint, detail, ..
            } => write!(f, "TLS handshake with {endpoint} failed: {detail}"),
            TlsError::Untrusted { endpoint, detail } => write!(
                f,
                "the certificate of {endpoint} is not trusted (--tls-ca-file/TLSCAFile): {detail}"
            ),
            TlsError::Mismatch {
                endpoint,
                what,
                expected,
                got,
            } => write!(
                f,
                "the certificate {what} of {endpoint} is {:?}, not {:?} as required",
                shown(got),
                shown(expected)
            ),
        }
    }
}

impl std::error::Error for TlsError {}

impl Classify for TlsError {
    fn failure(&self) -> Failure {
        match self {
            TlsError::Setting(_) => Failure::Usage,
            TlsError::PskFile { .. } => Failure::TlsPsk,
            TlsError::Handshake { .. } => Failure::TlsHandshake,
            TlsError::Untrusted { .. } => Failure::TlsUntrusted,
            TlsError::Mismatch { .. } => Failure::TlsMismatch,
        }
    }
}

/// A TLS client for one run: the context, built once, and the checks each connection makes.
pub struct Client {
    ctx: SslContext,
    mode: Mode,
    issuer: Option<String>,
    subject: Option<String>,
}

impl fmt::Debug for Client {
    /// Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("tls::Client")
            .field("mode", &self.mode)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

fn setting(what: impl fmt::Display) -> TlsError {
    TlsError::Setting(what.to_string())
}

fn file_error(flag: &str, path: &Path, e: ErrorStack) -> TlsError {
    setting(format!("{flag} {}: {}", path.display(), first_reason(&e)))
}

impl Client {
    /// The client `settings` ask for; `None` for unencrypted connections. Files are read now,
    /// so a bad one is reported before anything is sent.
    pub fn new(settings: &Settings) -> Result<Option<Client>, TlsError> {
        let s = settings;
        let cert_only = [
            ("--tls-ca-file", s.ca_file.is_some()),
            ("--tls-crl-file", s.crl_file.is_some()),
            ("--tls-server-cert-issuer", s.server_cert_issuer.is_some()),
            ("--tls-server-cert-subject", s.server_cert_subject.is_some()),
            ("--tls-cert-file", s.cert_file.is_some()),
            ("--tls-key-file", s.key_file.is_some()),
        ];
        let psk_only = [
            ("--tls-psk-identity", s.psk_identity.is_some()),
            ("--tls-psk-file", s.psk_file.is_some()),
        ];
        let misplaced = |list: &[(&str, bool)], mode: &str| {
            list.iter().find(|(_, set)| *set).map(|(flag, _)| {
                setting(format!(
                    "{flag} needs --tls-connect {mode} (TLSConnect={mode})"
                ))
            })
        };
        let psk = match s.connect {
            Mode::Unencrypted => {
                if let Some(e) = misplaced(&psk_only, "psk").or(misplaced(&cert_only, "cert")) {
                    return Err(e);
                }
                // Before any OpenSSL call: initialising it costs a plain run about 3 MB of
                // RSS and milliseconds (measured by `make bench`).
                return Ok(None);
            }
            Mode::Psk => true,
            Mode::Cert => false,
        };
        let mut b = SslContext::builder(SslMethod::tls_client()).map_err(openssl_setting)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(openssl_setting)?;
        b.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_TICKET);
        match psk {
            true => {
                if let Some(e) = misplaced(&cert_only, "cert") {
                    return Err(e);
                }
                let identity = s.psk_identity.clone().ok_or_else(|| {
                    setting("--tls-connect psk needs --tls-psk-identity (TLSPSKIdentity)")
                })?;
                check_identity(&identity)?;
                let path = s.psk_file.as_ref().ok_or_else(|| {
                    setting("--tls-connect psk needs --tls-psk-file (TLSPSKFile)")
                })?;
                let key = read_psk(path)?;
                psk_context(&mut b, identity, key)?;
            }
            false => {
                if let Some(e) = misplaced(&psk_only, "psk") {
                    return Err(e);
                }
                let need = |p: &Option<PathBuf>, flag: &str| {
                    p.clone()
                        .ok_or_else(|| setting(format!("--tls-connect cert needs {flag}")))
                };
                let ca = need(&s.ca_file, "--tls-ca-file (TLSCAFile)")?;
                let cert = need(&s.cert_file, "--tls-cert-file (TLSCertFile)")?;
                let key = need(&s.key_file, "--tls-key-file (TLSKeyFile)")?;
                b.set_cipher_list(CERT_CIPHERS).map_err(openssl_setting)?;
                b.set_ca_file(&ca)
                    .map_err(|e| file_error("--tls-ca-file", &ca, e))?;
                if let Some(crl) = &s.crl_file {
                    let store = b.cert_store_mut();
                    store
                        .add_lookup(X509Lookup::file())
                        .map_err(openssl_setting)?
                        .load_crl_file(crl, SslFiletype::PEM)
                        .map_err(|e| file_error("--tls-crl-file", crl, e))?;
                    store
                        .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
                        .map_err(openssl_setting)?;
                }
                b.set_certificate_chain_file(&cert)
                    .map_err(|e| file_error("--tls-cert-file", &cert, e))?;
                b.set_private_key_file(&key, SslFiletype::PEM)
                    .map_err(|e| file_error("--tls-key-file", &key, e))?;
                b.check_private_key().map_err(|_| {
                    setting(format!(
                        "--tls-key-file {} is not the key of --tls-cert-file {}",
                        key.display(),
                        cert.display()
                    ))
                })?;
                b.set_verify(SslVerifyMode::PEER);
            }
        }
        Ok(Some(Client {
            ctx: b.build(),
            mode: s.connect,
            issuer: s.server_cert_issuer.clone(),
            subject: s.server_cert_subject.clone(),
        }))
    }

    /// The mode this client connects in (psk or cert).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Run the handshake over `stream` (whose reads and writes the caller bounds by the
    /// deadline) and check the server's certificate. `Ok(Err(io))` is an I/O failure, a
    /// timeout say, for the caller to class.
    pub fn connect<S: Read + Write>(
        &self,
        stream: S,
        endpoint: &str,
    ) -> Result<Result<SslStream<S>, io::Error>, TlsError> {
        let handshake = |detail: String| TlsError::Handshake {
            endpoint: endpoint.to_string(),
            mode: self.mode,
            detail,
        };
        let ssl = Ssl::new(&self.ctx).map_err(|e| handshake(first_reason(&e)))?;
        let stream = match ssl.connect(stream) {
            Ok(s) => s,
            Err(HandshakeError::WouldBlock(_)) => {
                return Ok(Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "timed out in the TLS handshake",
                )))
            }
            Err(HandshakeError::SetupFailure(e)) => return Err(handshake(first_reason(&e))),
            Err(HandshakeError::Failure(mid)) => {
                let verify = mid.ssl().verify_result();
                if verify != X509VerifyResult::OK {
                    return Err(TlsError::Untrusted {
                        endpoint: endpoint.to_string(),
                        detail: verify.error_string().to_string(),
                    });
                }
                let e = mid.error();
                if let Some(io) = e.io_error() {
                    if matches!(
                        io.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        return Ok(Err(io::Error::new(io.kind(), io.to_string())));
                    }
                }
                let detail = match (e.code(), e.ssl_error()) {
                    (_, Some(stack)) => first_reason(stack),
                    (ErrorCode::SYSCALL, None) => match e.io_error() {
                        Some(io) => io.to_string(),
                        None => "the server closed the connection".to_string(),
                    },
                    _ => e.to_string(),
                };
                return Err(handshake(detail));
            }
        };
        if self.issuer.is_some() || self.subject.is_some() {
            let cert = stream
                .ssl()
                .peer_certificate()
                .ok_or_else(|| handshake("the server sent no certificate".to_string()))?;
            let checks = [
                ("issuer", &self.issuer, cert.issuer_name()),
                ("subject", &self.subject, cert.subject_name()),
            ];
            for (what, expected, name) in checks {
                let Some(expected) = expected else { continue };
                let got = rfc4514(name);
                if got != *expected {
                    return Err(TlsError::Mismatch {
                        endpoint: endpoint.to_string(),
                        what,
                        expected: expected.clone(),
                        got,
                    });
                }
            }
        }
        Ok(Ok(stream))
    }
}

fn openssl_setting(e: ErrorStack) -> TlsError {
    setting(first_reason(&e))
}

/// The most telling part of an OpenSSL error stack, in one line.
fn first_reason(e: &ErrorStack) -> String {
    match e.errors().first() {
        Some(err) => err
            .reason()
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string()),
        None => "unknown OpenSSL error".to_string(),
    }
}

fn check_identity(identity: &str) -> Result<(), TlsError> {
    if identity.is_empty() || identity.len() > PSK_IDENTITY_MAX {
        return Err(setting(format!(
            "the PSK identity must be 1-{PSK_IDENTITY_MAX} bytes of UTF-8"
        )));
    }
    if identity.contains('\0') {
        return Err(setting("the PSK identity must not contain NUL"));
    }
    Ok(())
}

/// Read a PSK file as Zabbix does: the first line, 32-512 hex digits, an even number.
pub fn read_psk(path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |reason: String| TlsError::PskFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
    // A PSK is at most 512 digits: never read a huge file into memory.
    let mut text = Vec::new();
    (&mut file)
        .take(4096)
        .read_to_end(&mut text)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line)
        .map_err(|_| err("not hex digits".into()))?
        .trim();
    parse_psk_hex(line).map_err(err)
}

/// Decode a PSK written in hex (Zabbix's `TLSPSKFile` and the host's `tls_psk`).
pub fn parse_psk_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.is_empty() {
        return Err("empty (it must hold the key as 32-512 hex digits)".into());
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not hex digits (the key must be written as 32-512 hex digits)".into());
    }
    if !(PSK_MIN_HEX..=PSK_MAX_HEX).contains(&hex.len()) || hex.len() % 2 != 0 {
        return Err(format!(
            "{} hex digits: a key must have an even number from {PSK_MIN_HEX} to {PSK_MAX_HEX}",
            hex.len()
        ));
    }
    Ok((0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect())
}

fn psk_context(b: &mut SslContextBuilder, identity: String, key: Vec<u8>) -> Result<(), TlsError> {
    b.set_cipher_list(PSK_CIPHERS).map_err(openssl_setting)?;
    // No certificate is involved: the key is the authentication.
    b.set_verify(SslVerifyMode::NONE);
    b.set_psk_client_callback(move |_ssl, _hint, id_out, key_out| {
        let id = identity.as_bytes();
        if id.len() + 1 > id_out.len() || key.len() > key_out.len() {
            return Ok(0);
        }
        id_out[..id.len()].copy_from_slice(id);
        id_out[id.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    Ok(())
}

/// A distinguished name as Zabbix shows and compares it: RFC 4514, the last RDN first
/// (`CN=Concierge Lab CA,O=Concierge Lab`).
pub fn rfc4514(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?").to_string();
            let value = e
                .data()
                .to_string()
                .unwrap_or_else(|_| String::from_utf8_lossy(e.data().as_slice()).into_owned());
            format!("{key}={}", escape_dn_value(&value))
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk_settings(identity: &str, file: &Path) -> Settings {
        Settings {
            connect: Mode::Psk,
            psk_identity: Some(identity.into()),
            psk_file: Some(file.into()),
            ..Settings::default()
        }
    }

    #[test]
    fn psk_files_are_read_as_zabbix_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            fs::File::create(&p)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            p
        };
        let good = write("good", &format!("{}\n", "0a".repeat(16)));
        assert_eq!(read_psk(&good).unwrap(), vec![0x0a; 16]);
        for (name, text, why) in [
            ("empty", "", "empty"),
            ("short", "abcd\n", "4 hex digits"),
            ("odd", &"a".repeat(33), "33 hex digits"),
            ("nothex", &"zz".repeat(16), "not hex digits"),
            ("long", &"ab".repeat(257), "514 hex digits"),
        ] {
            let e = read_psk(&write(name, text)).unwrap_err();
            assert_eq!(e.failure(), Failure::TlsPsk, "{name}");
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        let e = read_psk(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.failure(), Failure::TlsPsk);
        assert!(e.to_string().contains("cannot read"), "{e}");
        // The same through the client, which reads the file when it is built.
        let e = Client::new(&psk_settings("id", &dir.path().join("missing"))).unwrap_err();
        assert_eq!(e.failure(), Failure::TlsPsk);
        assert!(Client::new(&psk_settings("id", &good)).unwrap().is_some());
    }

    #[test]
    fn each_mode_needs_its_settings_and_refuses_the_others() {
        let none = Client::new(&Settings::default()).unwrap();
        assert!(none.is_none());
        let cases = [
            (
                Settings {
                    connect: Mode::Psk,
                    psk_file: Some("/x".into()),
                    ..Settings::default()
                },
                "needs --tls-psk-identity",
            ),
            (
                Settings {
                    connect: Mode::Psk,
                    psk_identity: Some("i".into()),
                    ..Settings::default()
                },
                "needs --tls-psk-file",
            ),
            (
                Settings {
                    connect: Mode::Cert,
                    ..Settings::default()
                },
                "needs --tls-ca-file",
            ),
            (
                Settings {
                    psk_identity: Some("i".into()),
                    ..Settings::default()
                },
                "--tls-psk-identity needs --tls-connect psk",
            ),
            (
                Settings {
                    connect: Mode::Psk,
                    psk_identity: Some("i".into()),
                    psk_file: Some("/x".into()),
                    ca_file: Some("/ca".into()),
                    ..Settings::default()
                },
                "--tls-ca-file needs --tls-connect cert",
            ),
            (
                Settings {
                    connect: Mode::Cert,
                    ca_file: Some("/nonexistent/ca.crt".into()),
                    cert_file: Some("/c".into()),
                    key_file: Some("/k".into()),
                    ..Settings::default()
                },
                "--tls-ca-file /nonexistent/ca.crt",
            ),
        ];
        for (s, want) in cases {
            let e = Client::new(&s).unwrap_err();
            assert_eq!(e.failure(), Failure::Usage, "{s:?}");
            assert!(e.to_string().contains(want), "{e} should say {want}");
        }
    }

    #[test]
    fn modes_parse_as_the_agent_writes_them() {
        assert_eq!(Mode::parse("PSK"), Some(Mode::Psk));
        assert_eq!(Mode::parse(" cert "), Some(Mode::Cert));
        assert_eq!(Mode::parse("unencrypted"), Some(Mode::Unencrypted));
        assert_eq!(Mode::parse("tls"), None);
    }

    #[test]
    fn dn_values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape_dn_value("Concierge Lab"), "Concierge Lab");
        assert_eq!(escape_dn_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
    }
}
