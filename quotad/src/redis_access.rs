//! How quotad reaches Redis beyond what its URLs say: TLS (a private CA to trust instead of the
//! system's roots, a client certificate for Redis's `tls-auth-clients yes`) and the credentials
//! of the data nodes behind Redis Sentinel (the sentinels' URLs carry only the sentinels' own).
//!
//! Everything is read once, at start, and checked then: a file that does not load stops quotad
//! with an error naming the flag and the file, never the file's contents.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::tls::MAX_PEM_BYTES;

/// Most bytes read from a `--redis-sentinel-auth-file` (one line: a user and a password).
pub const MAX_AUTH_BYTES: u64 = 4096;

/// The TLS files given for Redis, read and checked: what redis-rs is handed for every TLS
/// connection (nodes, Cluster nodes, sentinels and the data nodes behind them).
#[derive(Clone, Default)]
pub struct RedisTls {
    /// `--redis-ca`: PEM certificates trusted instead of the system's roots.
    ca: Option<Vec<u8>>,
    /// `--redis-client-cert` and `--redis-client-key`: PEM chain and key.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    /// Reads and checks the files: the CA holds certificates, the client certificate a chain
    /// whose first certificate matches the key.
    pub fn load(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<RedisTls, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS to Redis: {e}"))?;
        let mut roots = RootCertStore::empty();
        let ca = match ca {
            Some(path) => {
                let pem = read(path, "--redis-ca", MAX_PEM_BYTES)?;
                for cert in certificates(&pem, path, "--redis-ca")? {
                    roots.add(cert).map_err(|e| {
                        format!("--redis-ca {}: not a CA certificate ({e})", path.display())
                    })?;
                }
                Some(pem)
            }
            None => None,
        };
        let builder = builder.with_root_certificates(roots);
        let client = match client {
            Some((cert_path, key_path)) => {
                let cert = read(cert_path, "--redis-client-cert", MAX_PEM_BYTES)?;
                let key = read(key_path, "--redis-client-key", MAX_PEM_BYTES)?;
                let chain = certificates(&cert, cert_path, "--redis-client-cert")?;
                let der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    format!(
                        "--redis-client-key {}: no PEM private key in it ({e})",
                        key_path.display()
                    )
                })?;
                builder.with_client_auth_cert(chain, der).map_err(|e| {
                    format!(
                        "--redis-client-cert {} and --redis-client-key {}: {e}",
                        cert_path.display(),
                        key_path.display()
                    )
                })?;
                Some((cert, key))
            }
            None => None,
        };
        Ok(RedisTls { ca, client })
    }

    /// Whether neither a CA nor a client certificate was given.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// The flags given, for an error that says they need rediss:// URLs.
    pub fn flags(&self) -> String {
        let mut flags = Vec::new();
        if self.ca.is_some() {
            flags.push("--redis-ca");
        }
        if self.client.is_some() {
            flags.push("--redis-client-cert");
        }
        flags.join(" and ")
    }

    /// As redis-rs takes them: no CA means the system's roots.
    pub fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.ca.clone(),
        }
    }
}

/// A user (none: Redis's `default`) and a password, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `password`, or `user:password` (split at the first colon; `default:pa:ss` for a
    /// password with a colon in it). Nothing is trimmed but the line's end.
    pub fn parse(line: &str) -> Option<Credentials> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (username, password) = match line.split_once(':') {
            Some((user, password)) => ((!user.is_empty()).then(|| user.to_string()), password),
            None => (None, line),
        };
        (!password.is_empty()).then(|| Credentials {
            username,
            password: password.to_string(),
        })
    }

    /// The first line of `path` (of at most [`MAX_AUTH_BYTES`]); `flag` names it in errors,
    /// which never quote the file.
    pub fn read_file(path: &Path, flag: &str) -> Result<Credentials, String> {
        let bytes = read(path, flag, MAX_AUTH_BYTES)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{flag} {}: it is not UTF-8 text", path.display()))?;
        Credentials::parse(text.lines().next().unwrap_or("")).ok_or_else(|| {
            format!(
                "{flag} {}: its first line holds no password (`password` or `user:password`)",
                path.display()
            )
        })
    }
}

/// The contents of `path`, refused if longer than `max` bytes.
fn read(path: &Path, flag: &str, max: u64) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| format!("{flag} {}: cannot read it: {e}", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "{flag} {}: larger than {max} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// The certificates of a PEM file: at least one.
fn certificates(
    pem: &[u8],
    path: &Path,
    flag: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not PEM certificates ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// rustls's process-wide crypto provider, which redis-rs's TLS connections take
/// (`ClientConfig::builder()`): aws-lc-rs, as on quotad's listener. Installed once; without it
/// rustls would choose by its crate features, and panic on the first connection if another
/// dependency ever enabled a second provider.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one meanwhile: then that one serves.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::Credentials;

    #[test]
    fn an_auth_line_is_a_password_or_a_user_and_a_password() {
        let c = |u: Option<&str>, p: &str| Credentials {
            username: u.map(str::to_string),
            password: p.to_string(),
        };
        assert_eq!(Credentials::parse("s3cret"), Some(c(None, "s3cret")));
        assert_eq!(
            Credentials::parse("quotad:s3cret"),
            Some(c(Some("quotad"), "s3cret"))
        );
        assert_eq!(
            Credentials::parse("default:pa:ss"),
            Some(c(Some("default"), "pa:ss"))
        );
        assert_eq!(Credentials::parse(":s3cret"), Some(c(None, "s3cret")));
        assert_eq!(Credentials::parse("s3cret\r"), Some(c(None, "s3cret")));
        assert_eq!(Credentials::parse(" s3cret "), Some(c(None, " s3cret ")));
        assert_eq!(Credentials::parse(""), None);
        assert_eq!(Credentials::parse("quotad:"), None);
        assert!(!format!("{:?}", c(Some("quotad"), "s3cret")).contains("s3cret"));
    }
}
