//! `cairn user|key|role|grant|audit|signing-key ...`: identities and
//! access, changed in the store directly (for bootstrap and recovery),
//! through the same operations and checks as the REST routes. The command
//! line acts as an administrator and is audited as actor `cli`. The
//! embedded store allows one process at a time: stop the server first, or
//! use the routes.

use cairn::settings::{Overrides, Settings};
use cairn_api::auth::fields::Fields;
use cairn_api::auth::{Auth, Caller, accounts};
use cairn_api::error::ApiError;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Which store to open (as for `serve`).
#[derive(Args, Clone)]
pub struct StoreArgs {
    #[arg(long, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn settings(self) -> Result<Settings, String> {
        Settings::load(
            self.config.as_deref(),
            Overrides {
                data_dir: self.data_dir,
                database_url: self.database_url,
                ..Overrides::default()
            },
        )
        .map_err(|e| e.to_string())
    }
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Create a local user; the password is read from stdin (one line).
    Add {
        name: String,
        /// A role to give (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Change a user: new password (from stdin), roles, enable/disable, unlock.
    Set {
        name: String,
        /// Read a new password from stdin (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Replace the user's roles (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
        /// Clear a lockout after failed logins.
        #[arg(long)]
        unlock: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a user (its sessions and keys are revoked, its grants removed).
    Delete {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum KeyAction {
    /// Create an API key; it is printed once and never stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Narrow the key to these permissions (resource:action).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Seconds until it expires (default: never).
        #[arg(long)]
        expires_in: Option<i64>,
        /// Issue it to this user (it then acts as that user).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum RoleAction {
    /// Define a custom role.
    Create {
        name: String,
        /// A permission held everywhere (resource:action, `*` wildcards).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// A permission held only on owned or granted receivers and groups.
        #[arg(long = "on-grant")]
        on_grant: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List built-in and custom roles.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a custom role.
    Delete {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum GrantAction {
    /// Grant permissions on one receiver or group.
    Add {
        /// user:<name>, key:<id> or oidc:<subject>.
        #[arg(long)]
        principal: String,
        #[arg(long, conflicts_with = "group")]
        receiver: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List grants.
    List {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a grant by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Print audit log entries, newest first, as JSON lines.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        outcome: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum SigningKeyAction {
    /// Retire the JWT signing key and make a new one (the old one still
    /// verifies for auth_signing_key_grace_secs).
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn read_password() -> Result<String, ApiError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ApiError::field("password", format!("could not be read from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn fields(v: Value) -> Fields {
    match v {
        Value::Object(map) => Fields(map),
        _ => Fields::default(),
    }
}

/// Load the settings of `store`, open the store they name on a
/// single-threaded runtime, run `op` on it and close it again; the shared
/// frame of every command that works on the store directly.
pub fn on_store<F, Fut>(store: StoreArgs, op: F) -> ExitCode
where
    F: FnOnce(Settings, cairn::startup::OpenedStore) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let settings = match store.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let opened = match cairn::startup::open_store(&settings).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("cairn: {e}");
                return ExitCode::FAILURE;
            }
        };
        let registry = opened.store.clone();
        let code = op(settings, opened).await;
        registry.close().await;
        code
    })
}

/// Run `op` as the command line (an administrator, audited as `cli`) and
/// print what it returns, one JSON document per line.
fn run<F, Fut>(store: StoreArgs, op: F) -> ExitCode
where
    F: FnOnce(Arc<Auth>, Arc<dyn cairn_store::Store>, Caller) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Value>, ApiError>>,
{
    on_store(store, |settings, opened| async move {
        let mut config = settings.auth_config();
        config.enabled = true;
        let auth = match Auth::start(config, opened.access.clone()).await {
            Ok(a) => Arc::new(a),
            Err(e) => {
                eprintln!("cairn: {e}");
                return ExitCode::FAILURE;
            }
        };
        let caller = Caller::cli(opened.access.clone());
        match op(auth, opened.store, caller).await {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cairn: {}", e.message());
                ExitCode::FAILURE
            }
        }
    })
}

fn one<T: serde::Serialize>(v: T) -> Result<Vec<Value>, ApiError> {
    serde_json::to_value(v)
        .map(|v| vec![v])
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn many<T: serde::Serialize>(items: Vec<T>) -> Result<Vec<Value>, ApiError> {
    items
        .into_iter()
        .map(|v| serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string())))
        .collect()
}

const ALL: u32 = 1000;

pub fn user(action: UserAction) -> ExitCode {
    match action {
        UserAction::Add { name, roles, store } => run(store, |auth, _, caller| async move {
            let password = read_password()?;
            one(accounts::create_user(
                &auth,
                &caller,
                fields(json!({"name": name, "password": password, "roles": roles})),
            )
            .await?)
        }),
        UserAction::List { store } => run(store, |auth, _, caller| async move {
            many(accounts::list_users(&auth, &caller, ALL, None).await?)
        }),
        UserAction::Set {
            name,
            password_stdin,
            roles,
            disable,
            enable,
            unlock,
            store,
        } => run(store, |auth, _, caller| async move {
            let mut body = serde_json::Map::new();
            if password_stdin {
                body.insert("password".into(), Value::String(read_password()?));
            }
            if !roles.is_empty() {
                body.insert("roles".into(), json!(roles));
            }
            if disable || enable {
                body.insert("disabled".into(), Value::Bool(disable));
            }
            if unlock {
                body.insert("unlock".into(), Value::Bool(true));
            }
            one(accounts::update_user(&auth, &caller, &name, Fields(body)).await?)
        }),
        UserAction::Delete { name, store } => run(store, |auth, _, caller| async move {
            accounts::delete_user(&auth, &caller, &name).await?;
            Ok(vec![json!({"deleted": name})])
        }),
    }
}

pub fn key(action: KeyAction) -> ExitCode {
    match action {
        KeyAction::Create {
            name,
            roles,
            scopes,
            expires_in,
            user,
            store,
        } => run(store, |auth, _, caller| async move {
            let mut body = json!({"name": name, "roles": roles, "scopes": scopes});
            if let Some(s) = expires_in {
                body["expires_in"] = json!(s);
            }
            if let Some(u) = user {
                body["user"] = json!(u);
            }
            one(accounts::create_key_from(&auth, &caller, fields(body)).await?)
        }),
        KeyAction::List { principal, store } => run(store, |auth, _, caller| async move {
            many(accounts::list_keys(&auth, &caller, principal.as_deref(), ALL, None).await?)
        }),
        KeyAction::Revoke { id, store } => run(store, |auth, _, caller| async move {
            one(accounts::revoke_key(&auth, &caller, &id).await?)
        }),
    }
}

pub fn role(action: RoleAction) -> ExitCode {
    match action {
        RoleAction::Create {
            name,
            permissions,
            on_grant,
            description,
            store,
        } => run(store, |auth, _, caller| async move {
            one(accounts::create_role(
                &auth,
                &caller,
                accounts::NewRole {
                    name,
                    permissions,
                    on_grant,
                    description,
                },
            )
            .await?)
        }),
        RoleAction::List { store } => run(store, |auth, _, caller| async move {
            many(accounts::list_roles(&auth, &caller, ALL, None).await?)
        }),
        RoleAction::Delete { name, store } => run(store, |auth, _, caller| async move {
            accounts::delete_role(&auth, &caller, &name).await?;
            Ok(vec![json!({"deleted": name})])
        }),
    }
}

pub fn grant(action: GrantAction) -> ExitCode {
    match action {
        GrantAction::Add {
            principal,
            receiver,
            group,
            permissions,
            store,
        } => run(store, |auth, registry, caller| async move {
            one(accounts::create_grant(
                &auth,
                registry.as_ref(),
                &caller,
                accounts::NewGrant {
                    principal,
                    receiver_id: receiver,
                    group_id: group,
                    permissions,
                },
            )
            .await?)
        }),
        GrantAction::List { principal, store } => run(store, |auth, _, caller| async move {
            let filter = accounts::grant_filter(principal, None, None);
            many(accounts::list_grants(&auth, &caller, filter, ALL, None).await?)
        }),
        GrantAction::Revoke { id, store } => run(store, |auth, _, caller| async move {
            one(accounts::delete_grant(&auth, &caller, &id).await?)
        }),
    }
}

pub fn audit(action: AuditAction) -> ExitCode {
    let AuditAction::List {
        limit,
        actor,
        action,
        outcome,
        store,
    } = action;
    run(store, |auth, _, caller| async move {
        let filter = cairn_store::access::AuditFilter {
            actor,
            action,
            outcome,
            since: None,
            before_seq: None,
            limit: limit.clamp(1, 10_000),
        };
        many(accounts::list_audit(&auth, &caller, filter).await?)
    })
}

pub fn signing_key(action: SigningKeyAction) -> ExitCode {
    let SigningKeyAction::Rotate { store } = action;
    run(store, |auth, _, caller| async move {
        let kid = accounts::rotate_signing_key(&auth, &caller).await?;
        Ok(vec![json!({"kid": kid})])
    })
}
