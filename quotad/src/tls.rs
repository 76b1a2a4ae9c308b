//! TLS on the gRPC listener, mutual TLS when a client CA is given, and an allow-list of the
//! client identities (certificate subject alternative names) that may call quotad.
//!
//! - Certificates and keys are PEM files (a Kubernetes `kubernetes.io/tls` Secret mounted as
//!   files: `tls.crt`, `tls.key`, `ca.crt`), each read to at most [`MAX_PEM_BYTES`].
//! - They are read again every `--tls-reload-ms`: a change (a renewed certificate, a new CA)
//!   applies to the connections accepted after it, without a restart; a change that does not
//!   load (a key that does not match, a half-written file) is logged and the last good set
//!   keeps serving. Connections already open keep the certificate they were made with.
//! - With `--tls-client-ca`, a client must present a certificate that chains to it; with
//!   `--tls-allow` also, one of the certificate's DNS or URI names (a SPIFFE id) must be on the
//!   list, compared exactly (DNS names without regard to case). A refused client gets a TLS
//!   alert, never an HTTP/2 connection.
//! - A handshake has [`HANDSHAKE_TIMEOUT`]; it holds one of the connection slots while it runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// Most bytes read from one certificate, key or CA file (a chain of a few certificates is
/// ~10 KB; a CA bundle of a public trust store ~250 KB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest name of an allow-list entry, and of a presented name quoted in the log.
const MAX_NAME_BYTES: usize = 512;

/// Where the listener's certificate, key and client CA are, and who may call.
#[derive(Clone, Debug)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub allow: Vec<String>,
}

/// The server configuration new connections use, replaced when the files change.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: &Files) -> Result<(Tls, Vec<Vec<u8>>), String> {
        for name in &files.allow {
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                return Err(format!(
                    "--tls-allow: each name has 1 to {MAX_NAME_BYTES} bytes (a DNS name or a URI)"
                ));
            }
        }
        let contents = read_all(files)?;
        let config = server_config(files, &contents)?;
        Ok((
            Tls {
                current: Arc::new(RwLock::new(Arc::new(config))),
            },
            contents,
        ))
    }

    /// An acceptor for the next connection, with the current certificates.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.current.read() {
            Ok(config) => Arc::clone(&config),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Reads the files every `period`; when their bytes change and they load, new connections
    /// use them. Logs each change, and each distinct failure once.
    pub fn spawn_reload(&self, files: Files, mut last: Vec<Vec<u8>>, period: Duration) {
        let current = Arc::clone(&self.current);
        tokio::spawn(async move {
            let mut failed: Option<Vec<Vec<u8>>> = None;
            loop {
                tokio::time::sleep(period).await;
                let contents = match read_all(&files) {
                    Ok(contents) => contents,
                    Err(e) => {
                        if failed.is_none() {
                            log::warn!("TLS: {e}; still serving the certificates loaded before");
                            failed = Some(Vec::new());
                        }
                        continue;
                    }
                };
                if contents == last {
                    failed = None;
                    continue;
                }
                if failed.as_ref() == Some(&contents) {
                    continue;
                }
                match server_config(&files, &contents) {
                    Ok(config) => {
                        match current.write() {
                            Ok(mut slot) => *slot = Arc::new(config),
                            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
                        }
                        log::info!("TLS: certificates reloaded; new connections use them");
                        last = contents;
                        failed = None;
                    }
                    Err(e) => {
                        log::warn!("TLS: {e}; still serving the certificates loaded before");
                        failed = Some(contents);
                    }
                }
            }
        });
    }
}

/// The bytes of the certificate, key and client CA files, in that order.
fn read_all(files: &Files) -> Result<Vec<Vec<u8>>, String> {
    let mut contents = vec![
        read(&files.cert, "--tls-cert")?,
        read(&files.key, "--tls-key")?,
    ];
    if let Some(ca) = &files.client_ca {
        contents.push(read(ca, "--tls-client-ca")?);
    }
    Ok(contents)
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("{flag} {}: cannot read it: {e}", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{flag} {}: larger than {MAX_PEM_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(files: &Files, contents: &[Vec<u8>]) -> Result<ServerConfig, String> {
    let (cert_pem, key_pem) = match contents {
        [cert, key, ..] => (cert, key),
        _ => return Err("TLS: the certificate and key files were not read".to_string()),
    };
    let certs = certificates(cert_pem, &files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!(
            "--tls-key {}: no PEM private key in it ({e})",
            files.key.display()
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (&files.client_ca, contents.get(2)) {
        (Some(path), Some(ca_pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_pem, path, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "--tls-client-ca {}: not a CA certificate ({e})",
                        path.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            if files.allow.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_client_cert_verifier(Arc::new(AllowList {
                    inner: verifier,
                    allow: files.allow.clone(),
                }))
            }
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "--tls-cert {} and --tls-key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    // gRPC is HTTP/2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn certificates(
    pem: &[u8],
    path: &Path,
    flag: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{flag} {}: not PEM certificates ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The DNS and URI names of a certificate's subject alternative names.
pub fn identities(cert: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            GeneralName::URI(uri) => Some((*uri).to_string()),
            _ => None,
        })
        .collect()
}

/// Whether one of `names` (a certificate's) is on `allow`.
pub fn allowed(names: &[String], allow: &[String]) -> bool {
    names.iter().any(|name| {
        allow.iter().any(|entry| {
            if entry.contains("://") {
                entry == name
            } else {
                entry.eq_ignore_ascii_case(name)
            }
        })
    })
}

/// A client verifier that also requires one of the certificate's names on the allow-list.
#[derive(Debug)]
struct AllowList {
    inner: Arc<dyn ClientCertVerifier>,
    allow: Vec<String>,
}

/// The second of the last refusal logged: at most one line a second (a client refused in a
/// loop must not flood the log).
static LAST_REFUSAL_LOGGED: AtomicU64 = AtomicU64::new(0);

impl ClientCertVerifier for AllowList {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = identities(end_entity);
        if allowed(&names, &self.allow) {
            return Ok(verified);
        }
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if LAST_REFUSAL_LOGGED.swap(second, Ordering::Relaxed) != second {
            let mut shown = names.join(", ");
            if shown.len() > MAX_NAME_BYTES {
                let mut end = MAX_NAME_BYTES;
                while !shown.is_char_boundary(end) {
                    end -= 1;
                }
                shown.truncate(end);
                shown.push('…');
            }
            log::warn!(
                "TLS: refused a client whose certificate names [{shown}] none of --tls-allow"
            );
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_match_without_case_and_uris_exactly() {
        let allow = vec![
            "envoy.tollgate.svc".to_string(),
            "spiffe://cluster.local/ns/gw/sa/envoy".to_string(),
        ];
        assert!(allowed(&["envoy.tollgate.svc".into()], &allow));
        assert!(allowed(&["ENVOY.tollgate.SVC".into()], &allow));
        assert!(allowed(
            &["spiffe://cluster.local/ns/gw/sa/envoy".into()],
            &allow
        ));
        assert!(!allowed(
            &["spiffe://cluster.local/ns/gw/sa/ENVOY".into()],
            &allow
        ));
        assert!(!allowed(&["envoy.tollgate.svc.evil".into()], &allow));
        assert!(!allowed(&[], &allow));
    }
}
