//! TLS (docs/edge.md "TLS"): HTTPS round trips with a rustls client that
//! trusts only the test CA, HSTS over TLS only, a clean stop, and bad
//! certificate settings stopping start-up with the setting named.

use crate::helpers::*;
use cairn::settings::Settings;
use cairn::startup::Application;
use reqwest::StatusCode;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

fn tls_dir() -> PathBuf {
    cairn_testkit::tls::dir()
}

fn client_config() -> Arc<ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(tls_dir().join("ca.pem")).expect("the test CA");
    roots.add(ca).expect("a usable CA");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTP/1.1 request over TLS; the whole response as text.
async fn https(app: &TestApp, method: &str, path: &str, body: Option<&str>) -> String {
    let tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let connector = tokio_rustls::TlsConnector::from(client_config());
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
        .expect("a TLS handshake with the server's certificate");
    let key = app.admin_key.clone().expect("auth is on");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    // A peer closing without close_notify is an error in rustls; the bytes
    // read so far are still the response.
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8(out).expect("a UTF-8 response")
}

#[tokio::test]
async fn https_round_trip_with_hsts_only_over_tls() {
    let dir = tls_dir();
    let mut app = spawn_app_with(|s| {
        s.tls_cert_file = Some(dir.join("server.pem"));
        s.tls_key_file = Some(dir.join("server.key"));
    })
    .await;
    let response = https(&app, "GET", "/healthz/liveness", None).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nstrict-transport-security: max-age=31536000"),
        "{response}"
    );
    assert!(
        lower.contains("\r\nx-content-type-options: nosniff"),
        "{response}"
    );

    // Authenticated writes and reads work over TLS.
    let body = receiver_body("tls", serde_json::json!({})).to_string();
    let created = https(&app, "POST", "/api/v1/receivers", Some(&body)).await;
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let listed = https(&app, "GET", "/api/v1/receivers", None).await;
    assert!(
        listed.starts_with("HTTP/1.1 200") && listed.contains("\"tls\""),
        "{listed}"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = new_client().get(app.url("/healthz/liveness")).send().await;
    assert!(plain.is_err(), "plain HTTP is not served: {plain:?}");

    // It stops cleanly (the helper panics otherwise).
    app.stop().await;

    let plain_app = spawn_app().await;
    let res = new_client()
        .get(plain_app.url("/healthz/liveness"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!res.headers().contains_key("strict-transport-security"));
}

async fn build_error(configure: impl FnOnce(&mut Settings)) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    configure(&mut settings);
    match Application::build(settings).await {
        Ok(_) => panic!("bad TLS settings must stop start-up"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_tls_files_stop_start_up_naming_the_setting() {
    let dir = tls_dir();
    let scratch = tempfile::tempdir().expect("temp dir");
    let garbage = scratch.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").expect("write");

    let err = build_error(|s| {
        s.tls_cert_file = Some(dir.join("missing.pem"));
        s.tls_key_file = Some(dir.join("server.key"));
    })
    .await;
    assert!(err.contains("tls_cert_file"), "{err}");
    let err = build_error(|s| {
        s.tls_cert_file = Some(garbage.clone());
        s.tls_key_file = Some(dir.join("server.key"));
    })
    .await;
    assert!(err.contains("tls_cert_file"), "{err}");
    let err = build_error(|s| {
        s.tls_cert_file = Some(dir.join("server.pem"));
        s.tls_key_file = Some(garbage.clone());
    })
    .await;
    assert!(err.contains("tls_key_file"), "{err}");
    let err = build_error(|s| s.tls_cert_file = Some(dir.join("server.pem"))).await;
    assert!(err.contains("tls_key_file"), "{err}");
}
