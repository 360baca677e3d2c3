//! `cairn dead-letters list|replay` against a data directory.

use cairn_store::sqlite::{SqliteOptions, SqliteStore};
use cairn_store::{DeadLetter, Store};
use std::process::Command;

fn cairn(args: &[&str], data_dir: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CAIRN_CONFIG")
        .env_remove("CAIRN_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    let input: cairn_domain::ReceiverInput = serde_json::from_value(serde_json::json!({
        "name": "r", "type": "t", "version": "1", "description": "d", "schema": {}
    }))
    .unwrap();
    store
        .create_receiver(cairn_domain::NewReceiver::parse(input).unwrap())
        .await
        .unwrap();
    let message = store.outbox_after(0, 1).await.unwrap().remove(0);
    store
        .record_dead_letter(DeadLetter {
            sink: "hook".into(),
            seq: message.seq,
            message_id: message.id,
            attempts: 7,
            last_error: "HTTP 500".into(),
            failed_at: cairn_domain::Timestamp::from_micros(0),
        })
        .await
        .unwrap();
    store.close().await;
    drop(store);

    let (ok, out, err) = cairn(&["dead-letters", "list"], dir.path());
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "hook\t{}\t{}\t7\t1970-01-01T00:00:00.000000Z\tHTTP 500\n",
            message.seq, message.id
        )
    );
    let (ok, out, _) = cairn(&["dead-letters", "list", "--sink", "other"], dir.path());
    assert!(ok);
    assert_eq!(out, "");
    let seq = message.seq.to_string();
    let (ok, out, err) = cairn(&["dead-letters", "replay", "hook", &seq], dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("queued"), "{out}");
    let (ok, out, _) = cairn(&["dead-letters", "list"], dir.path());
    assert!(ok);
    assert_eq!(out, "");
    let (ok, _, err) = cairn(&["dead-letters", "replay", "hook", &seq], dir.path());
    assert!(!ok);
    assert!(err.contains("no dead letter"), "{err}");
}
