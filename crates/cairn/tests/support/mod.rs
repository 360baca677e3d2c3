//! Shared by the tests that drive the real `cairn` binary as a separate
//! process (`binary.rs`, `cluster.rs`).

#![allow(dead_code)] // each test target uses its own part of this module

use serde_json::Value;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running `cairn serve`; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    address: String,
    /// The first-start admin key in the data dir (authentication on).
    admin_key: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// `cairn serve --listen 127.0.0.1:0 --data-dir <data_dir>`.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[], &[])
    }

    /// As [`Server::start`], with more arguments and environment variables.
    pub fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_cairn")),
            data_dir,
            args,
            envs,
        )
    }

    /// As [`Server::start`], the binary run by `sh` after `shell` (which
    /// may set limits the process then starts with); the shell `exec`s it,
    /// so the pid is the server's.
    #[allow(dead_code)] // not every test binary starts one so
    pub fn start_after_shell(data_dir: &Path, shell: &str) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{shell}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_cairn"));
        Self::spawn(command, data_dir, &[], &[])
    }

    fn spawn(mut command: Command, data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args.iter().map(OsString::from))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("failed to start the cairn binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let log = Arc::clone(&log);
            // Keep draining stderr for the life of the process so it never blocks.
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = listening_address(&line)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() < 5000 {
                        log.push(line);
                    }
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => Self {
                child,
                address,
                admin_key: std::fs::read_to_string(data_dir.join("admin.key"))
                    .ok()
                    .map(|k| k.trim().to_owned()),
                log,
            },
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "no `listening on http://...` line on stderr ({e}); exit: {status:?}; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// The admin key this server's data dir holds, if any.
    pub fn admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref()
    }

    /// A client sending this server's admin key.
    pub fn client(&self) -> reqwest::Client {
        client_with(self.admin_key())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `... listening on http://127.0.0.1:4567 ...` -> `http://127.0.0.1:4567`
pub fn listening_address(line: &str) -> Option<String> {
    const MARK: &str = "listening on http://";
    let start = line.find(MARK)? + MARK.len();
    let hostport: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    let (_, port) = hostport.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    Some(format!("http://{hostport}"))
}

/// A client sending no credentials.
pub fn client() -> reqwest::Client {
    client_with(None)
}

/// A client sending `Authorization: Bearer <key>` on every request.
pub fn client_with(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .default_headers(headers)
        .build()
        .unwrap()
}

pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> reqwest::Result<(u16, Value)> {
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> reqwest::Result<(u16, Value)> {
    let res = client.get(url).send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}
