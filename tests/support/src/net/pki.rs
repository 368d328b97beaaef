//! The network's PKI, made at run time with rcgen: a throwaway CA (the one
//! the agent pins with `ca_file`), the server leaf it signs, the bad
//! certificates TLS-negative tests need, and the rustls server config built
//! from them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::{NetOptions, ServerCert, TlsVersions};

/// A certificate and its private key (PKCS#8), DER and PEM.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Leaf {
    /// Writes `<stem>.pem` (certificate) and `<stem>.key` (key) into `dir`,
    /// returning both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A throwaway certificate authority: the network's own CA (the one the
/// agent pins with `ca_file`) and the server leaf it signed for `localhost`
/// and `127.0.0.1`, plus makers of the certificates TLS-negative tests need.
pub struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    server: Leaf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn pki_err(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("rcgen: {e}"))
}

fn new_ca(cn: &str) -> Result<(Vec<u8>, String, Issuer<'static, KeyPair>), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cncop localnet");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.der().to_vec(), cert.pem(), Issuer::new(params, key)))
}

/// What kind of leaf to make.
#[derive(Clone, Copy)]
enum LeafKind {
    Server,
    Client,
}

fn leaf_params(
    names: &[&str],
    cn: &str,
    kind: LeafKind,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match kind {
        LeafKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
        LeafKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    Ok(params)
}

fn sign_leaf(
    params: &CertificateParams,
    issuer: Option<&Issuer<'_, KeyPair>>,
) -> Result<Leaf, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer)?,
        None => params.self_signed(&key)?,
    };
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// Names the good server leaf is valid for.
const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

impl Pki {
    /// Makes a new CA and a server leaf signed by it for `localhost` and
    /// `127.0.0.1`.
    pub fn generate() -> io::Result<Pki> {
        let (ca_der, ca_pem, issuer) = new_ca("cncop localnet test CA").map_err(pki_err)?;
        let params = leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        let server = sign_leaf(&params, Some(&issuer)).map_err(pki_err)?;
        Ok(Pki {
            ca_pem,
            ca_der,
            issuer,
            server,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Writes the CA certificate as `dir/ca.pem` and returns that path.
    pub fn write_ca(&self, dir: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }

    /// The good server leaf (signed by the CA, for `localhost` and `127.0.0.1`).
    pub fn server_leaf(&self) -> &Leaf {
        &self.server
    }

    /// A server leaf for the right names, signed by another, freshly made CA.
    pub fn leaf_other_ca(&self) -> io::Result<Leaf> {
        let (_, _, other) = new_ca("some other CA").map_err(pki_err)?;
        let params = leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        sign_leaf(&params, Some(&other)).map_err(pki_err)
    }

    /// A server leaf signed by the CA for the right names, valid only in
    /// 2000 (long expired).
    pub fn leaf_expired(&self) -> io::Result<Leaf> {
        let mut params =
            leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        sign_leaf(&params, Some(&self.issuer)).map_err(pki_err)
    }

    /// A server leaf signed by the CA, but for `wrong.cncop.invalid` only
    /// (neither `localhost` nor `127.0.0.1`).
    pub fn leaf_wrong_host(&self) -> io::Result<Leaf> {
        let params = leaf_params(
            &["wrong.cncop.invalid"],
            "wrong.cncop.invalid",
            LeafKind::Server,
        )
        .map_err(pki_err)?;
        sign_leaf(&params, Some(&self.issuer)).map_err(pki_err)
    }

    /// A self-signed server leaf for the right names.
    pub fn leaf_self_signed(&self) -> io::Result<Leaf> {
        let params = leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        sign_leaf(&params, None).map_err(pki_err)
    }

    /// A TLS client certificate (ClientAuth) for `cn`, signed by the CA.
    pub fn client_leaf(&self, cn: &str) -> io::Result<Leaf> {
        let params = leaf_params(&[], cn, LeafKind::Client).map_err(pki_err)?;
        sign_leaf(&params, Some(&self.issuer)).map_err(pki_err)
    }

    /// A TLS client certificate for `cn` signed by another CA.
    pub fn client_leaf_other_ca(&self, cn: &str) -> io::Result<Leaf> {
        let (_, _, other) = new_ca("some other client CA").map_err(pki_err)?;
        let params = leaf_params(&[], cn, LeafKind::Client).map_err(pki_err)?;
        sign_leaf(&params, Some(&other)).map_err(pki_err)
    }
}

pub(super) fn server_config(pki: &Pki, opts: &NetOptions) -> io::Result<Arc<ServerConfig>> {
    let tls_err = |e: rustls::Error| io::Error::other(format!("rustls: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static SupportedProtocolVersion] = match opts.tls_versions {
        TlsVersions::Both => rustls::DEFAULT_VERSIONS,
        TlsVersions::Tls12Only => &[&rustls::version::TLS12],
        TlsVersions::Tls13Only => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(tls_err)?;
    let builder = if opts.require_client_cert {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.ca_der.clone()))
            .map_err(tls_err)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| io::Error::other(format!("client verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let leaf = match &opts.server_cert {
        ServerCert::Valid => pki.server.clone(),
        ServerCert::OtherCa => pki.leaf_other_ca()?,
        ServerCert::Expired => pki.leaf_expired()?,
        ServerCert::WrongHost => pki.leaf_wrong_host()?,
        ServerCert::SelfSigned => pki.leaf_self_signed()?,
        ServerCert::Custom(l) => l.clone(),
    };
    let chain = vec![CertificateDer::from(leaf.cert_der)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der));
    let mut cfg = builder.with_single_cert(chain, key).map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
