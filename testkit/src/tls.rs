//! Certificates for TLS tests: a CA of their own, and server and client certificates it
//! issues, written as PEM files (the layout of a Kubernetes TLS Secret: `.crt` and `.key`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority whose files live in `dir`.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`; its certificate is written to `dir/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer,
        };
        std::fs::write(pki.ca(), pki.issuer.pem()).unwrap();
        pki
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// A certificate for `names` (DNS names and IP addresses; `spiffe://…` and other URIs
    /// become URI names), usable by servers and clients, written to `dir/<stem>.crt` and
    /// `dir/<stem>.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Pair {
        let (uris, others): (Vec<&str>, Vec<&str>) =
            names.iter().partition(|name| name.contains("://"));
        let mut params =
            CertificateParams::new(others.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, stem.to_string());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        // The key first: a reader that sees the new certificate finds its key.
        write_atomically(&pair.key, &key.serialize_pem());
        write_atomically(&pair.cert, &cert.pem());
        pair
    }
}

/// Writes through a temporary file and a rename, as a Secret update does (no half-written file).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
