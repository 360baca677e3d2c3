//! Outgoing HTTP and HTTPS for the components that call out (the webhook
//! sink, the OIDC key fetch): hyper-util's pooled HTTP/1.1 client behind
//! hyper-rustls, on the ring provider the server's own TLS uses, TLS 1.2
//! and 1.3.
//!
//! An `https://` peer's certificate is verified (chain and name) against
//! the system's CA roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured)
//! or, when a CA file is configured, against its CAs only. A client may
//! present a certificate of its own ([`Identity`], mutual TLS).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Which CAs an `https://` peer's certificate must chain to.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The system's CA roots; none found is an error.
    System,
    /// Only the CA certificates of this PEM file.
    File(&'a Path),
    /// No CA: for a client that only makes `http://` requests.
    PlainOnly,
}

impl<'a> Trust<'a> {
    /// What a client for `url` needs: `ca_file` when set, else the system's
    /// roots for an `https://` URL and none for an `http://` one.
    pub fn for_url(url: &http::Uri, ca_file: Option<&'a Path>) -> Self {
        match (ca_file, url.scheme_str()) {
            (Some(file), _) => Trust::File(file),
            (None, Some("https")) => Trust::System,
            (None, _) => Trust::PlainOnly,
        }
    }
}

/// The certificate a client presents when the peer asks for one (mutual
/// TLS): a PEM chain, leaf first, and its PEM private key.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
}

impl<'a> Identity<'a> {
    /// From a pair of settings, which are given both or neither: errors
    /// name the one missing (`client_cert_file ...`, `client_key_file ...`;
    /// the caller adds whose).
    pub fn from_files(
        cert_file: Option<&'a Path>,
        key_file: Option<&'a Path>,
    ) -> Result<Option<Self>, String> {
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Ok(Some(Self {
                cert_file,
                key_file,
            })),
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err("client_key_file: not set (the client certificate needs its key)".into())
            }
            (None, Some(_)) => {
                Err("client_cert_file: not set (the client key needs its certificate)".into())
            }
        }
    }

    /// The chain and the key, read and parsed; errors begin
    /// `client_cert_file <path>:` or `client_key_file <path>:`.
    pub fn load(
        &self,
    ) -> Result<
        (
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        ),
        String,
    > {
        let (cert_pem, key_pem) = self.read()?;
        self.parse(&cert_pem, &key_pem)
    }

    /// Both files' bytes (for clients that take the PEM itself), with the
    /// same checks and errors as [`Identity::load`]; each file read once.
    pub fn pem(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let (cert_pem, key_pem) = self.read()?;
        self.parse(&cert_pem, &key_pem)?;
        Ok((cert_pem, key_pem))
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        Ok((
            read_named(self.cert_file, "client_cert_file")?,
            read_named(self.key_file, "client_key_file")?,
        ))
    }

    fn parse(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<
        (
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        ),
        String,
    > {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let cert_named =
            |why: String| format!("client_cert_file {}: {why}", self.cert_file.display());
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_named(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_named("holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("client_key_file {}: {e}", self.key_file.display()))?;
        Ok((chain, key))
    }
}

/// A pooled client; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// Errors name the CA file, or say that the system has no CA roots.
    pub fn new(trust: Trust<'_>) -> Result<Self, String> {
        Self::with_identity(trust, None)
    }

    /// [`HttpClient::new`], presenting `identity` to a peer that asks for a
    /// client certificate. Errors also name its files, or say that the key
    /// does not belong to the certificate.
    pub fn with_identity(trust: Trust<'_>, identity: Option<Identity<'_>>) -> Result<Self, String> {
        let roots = match trust {
            Trust::System => system_roots()?,
            Trust::File(file) => Arc::new(load_ca_file(file)?),
            Trust::PlainOnly => Arc::new(RootCertStore::empty()),
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let tls = match identity {
            None => tls.with_no_client_auth(),
            Some(identity) => {
                let (chain, key) = identity.load()?;
                tls.with_client_auth_cert(chain, key).map_err(|e| {
                    format!(
                        "client_key_file {}: not usable with client_cert_file {}: {e}",
                        identity.key_file.display(),
                        identity.cert_file.display()
                    )
                })?
            }
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Send `req`; its answer's status, and its body read up to `max_body`
    /// bytes (an error when it is longer or breaks off, which the status
    /// does not undo). The caller bounds the whole exchange in time.
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<(http::StatusCode, Result<Bytes, String>), String> {
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| with_causes(&e))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), max_body)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the answer is longer than {max_body} bytes")
                } else {
                    format!("reading the answer: {}", with_causes(&*e))
                }
            });
        Ok((status, body))
    }
}

/// The CA certificates of a PEM file, every one usable; errors begin
/// `ca_file <path>:` (the caller adds whose).
pub fn load_ca_file(file: &Path) -> Result<RootCertStore, String> {
    let pem = read_named(file, "ca_file")?;
    ca_roots(&pem, file)
}

/// The bytes of a PEM file of CAs, checked as [`load_ca_file`] checks
/// them, read once: for clients that take the PEM itself.
pub fn ca_pem(file: &Path) -> Result<Vec<u8>, String> {
    let pem = read_named(file, "ca_file")?;
    ca_roots(&pem, file)?;
    Ok(pem)
}

/// A file's bytes; an error begins `<setting> <path>:`.
fn read_named(file: &Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("{setting} {}: {e}", file.display()))
}

/// The CAs in `pem` (read from `file`), every one usable.
fn ca_roots(pem: &[u8], file: &Path) -> Result<RootCertStore, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let named = |why: String| format!("ca_file {}: {why}", file.display());
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(e.to_string()))?;
    if certs.is_empty() {
        return Err(named("holds no certificate".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| named(format!("a certificate is not a usable CA: {e}")))?;
    }
    Ok(roots)
}

/// Whether an error of this crate's file checks ([`load_ca_file`],
/// [`ca_pem`], [`Identity`], [`HttpClient::with_identity`]) is about one
/// of the files, and so begins with its setting's name (`ca_file ...`,
/// `client_cert_file ...`, `client_key_file ...`), rather than about the
/// URL or the system's roots.
pub fn names_a_file(error: &str) -> bool {
    error.starts_with("ca_file") || error.starts_with("client_")
}

/// The system's CA roots, read once per process (settings validation and
/// every client that needs them share the one reading).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| read_system_roots().map(Arc::new))
        .clone()
}

/// Certificates that do not parse are skipped; none at all is an error.
fn read_system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no CA certificates found on this system for an https:// URL{why}; \
             install them or set ca_file"
        ));
    }
    Ok(roots)
}

/// An `http://` or `https://` URL with a host. The error says what the URL
/// must be; the caller names the setting.
pub fn parse_url(text: &str) -> Result<http::Uri, String> {
    const MUST: &str = "must be an http:// or https:// URL with a host";
    let uri: http::Uri = text.parse().map_err(|e| format!("{MUST} ({e})"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if scheme_ok && uri.host().is_some_and(|h| !h.is_empty()) {
        Ok(uri)
    } else {
        Err(MUST.to_owned())
    }
}

/// An error and its causes: hyper-util's own text is only "client error
/// (Connect)"; the reason (an unknown issuer, a refused connection) is a
/// cause.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // Some errors repeat their cause in their own text.
        let said = c.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_follows_the_ca_file_then_the_scheme() {
        let https: http::Uri = "https://h/x".parse().unwrap();
        let plain: http::Uri = "http://h/x".parse().unwrap();
        let file = Path::new("ca.pem");
        assert!(matches!(Trust::for_url(&https, None), Trust::System));
        assert!(matches!(Trust::for_url(&plain, None), Trust::PlainOnly));
        assert!(matches!(Trust::for_url(&plain, Some(file)), Trust::File(_)));
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_parse() {
        for good in ["http://h/x", "https://h:8443/x?q=1", "http://127.0.0.1:9"] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        for bad in ["ftp://h/x", "h/x", "https://", "not a url"] {
            let err = parse_url(bad).err().unwrap();
            assert!(
                err.starts_with("must be an http:// or https:// URL"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_identity_is_both_files_and_a_key_that_belongs_to_the_certificate() {
        let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn-testkit/tls");
        let (cert, key) = (tls.join("client.pem"), tls.join("client.key"));
        let half = Identity::from_files(Some(&cert), None).err().unwrap();
        assert!(half.starts_with("client_key_file: not set"), "{half}");
        let half = Identity::from_files(None, Some(&key)).err().unwrap();
        assert!(half.starts_with("client_cert_file: not set"), "{half}");
        assert!(Identity::from_files(None, None).unwrap().is_none());
        let good = Identity::from_files(Some(&cert), Some(&key)).unwrap();
        assert!(HttpClient::with_identity(Trust::PlainOnly, good).is_ok());
        // The server's key with the client's certificate: refused, named.
        let other_key = tls.join("server.key");
        let wrong = Identity::from_files(Some(&cert), Some(&other_key)).unwrap();
        let err = HttpClient::with_identity(Trust::PlainOnly, wrong)
            .err()
            .unwrap();
        assert!(
            err.starts_with(&format!("client_key_file {}", other_key.display())),
            "{err}"
        );
        // A key file holding a certificate: no key in it.
        let no_key = Identity {
            cert_file: &cert,
            key_file: &cert,
        };
        let err = no_key.load().err().unwrap();
        assert!(
            err.starts_with(&format!("client_key_file {}", cert.display())),
            "{err}"
        );
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_named() {
        let dir = std::env::temp_dir().join(format!("cairn-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for file in [dir.join("missing.pem"), empty] {
            let err = HttpClient::new(Trust::File(&file)).err().unwrap();
            assert!(
                err.starts_with(&format!("ca_file {}", file.display())),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
