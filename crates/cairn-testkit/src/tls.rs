//! The test TLS material in `crates/cairn-testkit/tls` (a throwaway CA, and
//! a certificate it signed for `localhost` and `127.0.0.1`; a throwaway
//! client CA and a client certificate it signed), and an HTTPS server for
//! an axum app with that certificate, which may require a client's.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::WebPkiClientVerifier;

/// The directory holding `ca.pem`, `server.pem` and `server.key`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tls")
}

/// The test CA's certificate (PEM).
pub fn ca_file() -> PathBuf {
    dir().join("ca.pem")
}

/// The client CA's certificate (PEM): what a server that requires client
/// certificates trusts.
pub fn client_ca_file() -> PathBuf {
    dir().join("client-ca.pem")
}

/// A client certificate the client CA signed (PEM), and its key.
pub fn client_identity() -> (PathBuf, PathBuf) {
    (dir().join("client.pem"), dir().join("client.key"))
}

/// axum's listener over TLS. A client that refuses the certificate ends
/// its handshake; the listener waits for the next.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serve `app` over HTTPS on a free loopback port, with the test
/// certificate; returns the port (`https://localhost:PORT`).
pub async fn serve(app: axum::Router) -> u16 {
    serve_with(app, false).await
}

/// [`serve`], answering only clients that present a certificate the client
/// CA signed ([`client_identity`]); any other ends its handshake.
pub async fn serve_mtls(app: axum::Router) -> u16 {
    serve_with(app, true).await
}

async fn serve_with(app: axum::Router, client_auth: bool) -> u16 {
    let config = server_config(client_auth);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the HTTPS server: {e}"));
    let port = tcp
        .local_addr()
        .unwrap_or_else(|e| panic!("the HTTPS server's address: {e}"))
        .port();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A TLS front for a plain-text TCP server on `upstream` (for a broker
/// that cannot serve TLS itself): each connection to `port`, once its
/// handshake on the test certificate succeeds (with a client certificate
/// the client CA signed, when `client_auth`), is joined to a connection of
/// its own to `upstream`. Runs until the test's runtime ends.
pub async fn proxy(port: u16, upstream: u16, client_auth: bool) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(client_auth)));
    let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("binding the TLS proxy on {port}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = tcp.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

/// The test server's TLS configuration, requiring a client certificate
/// the client CA signed when `client_auth`.
fn server_config(client_auth: bool) -> ServerConfig {
    let certs = CertificateDer::pem_file_iter(dir().join("server.pem"))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("the test certificate: {e}"));
    let key = PrivateKeyDer::from_pem_file(dir().join("server.key"))
        .unwrap_or_else(|e| panic!("the test key: {e}"));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("the test TLS versions: {e}"));
    let builder = if client_auth {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(client_ca_file())
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| panic!("the test client CA: {e}"))
        {
            roots
                .add(cert)
                .unwrap_or_else(|e| panic!("the test client CA: {e}"));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap_or_else(|e| panic!("the client verifier: {e}"));
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(certs, key)
        .unwrap_or_else(|e| panic!("the test TLS config: {e}"))
}
