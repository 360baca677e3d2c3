//! `cairn user|key|role|grant|audit|signing-key` against a data directory
//! (bootstrap without a running server), then the server started on it
//! honours what the commands wrote.

mod support;

use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use support::{Server, client, client_with, get_json, post_json};

/// Run `cairn <args> --data-dir <dir>` with `stdin`; (ok, stdout lines as
/// JSON, stderr).
fn cairn(args: &[&str], dir: &std::path::Path, stdin: &str) -> (bool, Vec<Value>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("CAIRN_CONFIG")
        .env_remove("CAIRN_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_made_on_the_command_line_work_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let (ok, out, err) = cairn(
        &["user", "add", "alice", "--role", "reader"],
        d,
        "correct horse battery staple\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out[0]["name"], "alice");
    assert_eq!(out[0]["roles"], json!(["reader"]));
    assert!(out[0].get("password_hash").is_none(), "never the hash");

    // Bad input is refused naming the field, and stores nothing.
    let (ok, _, err) = cairn(
        &["user", "add", "bob", "--role", "nosuch"],
        d,
        "long enough pw\n",
    );
    assert!(!ok);
    assert!(err.contains("roles[0]: no role named \"nosuch\""), "{err}");
    let (ok, _, err) = cairn(&["user", "add", "bob"], d, "short\n");
    assert!(!ok);
    assert!(
        err.contains("password: must be 8 to 1024 characters"),
        "{err}"
    );

    let (ok, out, err) = cairn(
        &[
            "role",
            "create",
            "release-bot",
            "--permission",
            "receivers:read",
            "--on-grant",
            "events:create",
        ],
        d,
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out[0]["on_grant"], json!(["events:create"]));

    let (ok, out, err) = cairn(
        &["key", "create", "--name", "ci", "--role", "release-bot"],
        d,
        "",
    );
    assert!(ok, "{err}");
    let ci_key = out[0]["key"].as_str().unwrap().to_owned();
    let ci_id = out[0]["id"].as_str().unwrap().to_owned();
    assert!(ci_key.starts_with(&format!("cairn_{ci_id}_")));
    let (ok, out, _) = cairn(&["key", "list"], d, "");
    assert!(ok);
    assert!(
        out.iter().all(|k| k.get("key").is_none()),
        "lists never show keys"
    );

    // Identities exist, so the server makes no admin key: alice and the CI
    // key are how in. An admin key made on the command line does the rest.
    let (ok, out, err) = cairn(
        &["key", "create", "--name", "ops", "--role", "admin"],
        d,
        "",
    );
    assert!(ok, "{err}");
    let admin = out[0]["key"].as_str().unwrap().to_owned();

    let rid;
    {
        let server = Server::start(d);
        assert!(
            server.admin_key().is_none(),
            "principals exist: no bootstrap key"
        );
        let admin_client = client_with(Some(&admin));
        let (status, body) = post_json(
            &admin_client,
            &server.url("/api/v1/receivers"),
            &json!({"name": "b", "type": "t", "version": "1", "description": "d", "schema": {}}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        rid = body["data"].as_str().unwrap().to_owned();

        let (status, body) = post_json(
            &client(),
            &server.url("/api/v1/auth/login"),
            &json!({"username": "alice", "password": "correct horse battery staple"}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let token = body["data"]["access_token"].as_str().unwrap().to_owned();
        let (status, _) = get_json(&client_with(Some(&token)), &server.url("/api/v1/receivers"))
            .await
            .unwrap();
        assert_eq!(status, 200, "a reader reads");

        // The CI key may not post until granted.
        let event = json!({"name": "n", "version": "1", "release": "r", "platform_id": "p",
                           "package": "k", "description": "d", "payload": {},
                           "event_receiver_id": rid});
        let ci = client_with(Some(&ci_key));
        let (status, body) = post_json(&ci, &server.url("/api/v1/events"), &event)
            .await
            .unwrap();
        assert_eq!(status, 403, "{body}");
    }

    // Granted on the command line (server stopped: one process per data dir).
    let (ok, out, err) = cairn(
        &[
            "grant",
            "add",
            "--principal",
            &format!("key:{ci_id}"),
            "--receiver",
            &rid,
            "--permission",
            "events:create",
        ],
        d,
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out[0]["object_id"], json!(rid));
    let server = Server::start(d);
    let event = json!({"name": "n", "version": "1", "release": "r", "platform_id": "p",
                       "package": "k", "description": "d", "payload": {},
                       "event_receiver_id": rid});
    let (status, body) = post_json(
        &client_with(Some(&ci_key)),
        &server.url("/api/v1/events"),
        &event,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "granted now: {body}");
    drop(server);

    // Revoked on the command line: refused.
    let (ok, _, err) = cairn(&["key", "revoke", &ci_id], d, "");
    assert!(ok, "{err}");
    let server = Server::start(d);
    let (status, body) = post_json(
        &client_with(Some(&ci_key)),
        &server.url("/api/v1/events"),
        &event,
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{body}");
    drop(server);

    // The audit log saw all of it, the command line as actor `cli`.
    let (ok, out, err) = cairn(&["audit", "list", "--limit", "200"], d, "");
    assert!(ok, "{err}");
    let has = |actor: &str, action: &str, outcome: &str| {
        out.iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e["outcome"] == outcome)
    };
    assert!(has("cli", "user.create", "success"));
    assert!(has("cli", "role.create", "success"));
    assert!(has("cli", "key.create", "success"));
    assert!(has("cli", "grant.create", "success"));
    assert!(has("cli", "key.revoke", "success"));
    assert!(has("user:alice", "auth.login", "success"));
    assert!(has(&format!("key:{ci_id}"), "permission.denied", "denied"));
    assert!(has(&format!("key:{ci_id}"), "auth.rejected", "failure"));

    let (ok, out, err) = cairn(&["signing-key", "rotate"], d, "");
    assert!(ok, "{err}");
    assert!(out[0]["kid"].as_str().is_some_and(|k| !k.is_empty()));
}
