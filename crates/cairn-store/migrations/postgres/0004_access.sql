-- Identities and what they may do (cairn_store::access): local users, API
-- keys, custom roles, grants, login sessions with their refresh tokens, JWT
-- signing keys and the append-only audit log. Names and ids compare
-- byte-wise (COLLATE "C") so that paging by them is stable whatever the
-- database collation; times are microseconds since the Unix epoch. Lists
-- are text[]. Secrets are never stored: API keys and refresh tokens as
-- SHA-256 hashes, passwords as Argon2id PHC strings.

CREATE TABLE users (
    name          TEXT COLLATE "C" PRIMARY KEY
                  CHECK (char_length(name) BETWEEN 1 AND 64),
    password_hash TEXT NOT NULL,
    roles         TEXT[] NOT NULL,
    disabled      BOOLEAN NOT NULL,
    failed_logins INTEGER NOT NULL CHECK (failed_logins >= 0),
    locked_until  BIGINT,
    last_login_at BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    -- `key:<id>` or `user:<name>`.
    principal    TEXT COLLATE "C" NOT NULL,
    roles        TEXT[] NOT NULL,
    scopes       TEXT[] NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);
-- A principal's keys (lists, and revoking a deleted user's keys).
CREATE INDEX api_keys_by_principal ON api_keys (principal, id);

CREATE TABLE roles (
    name        TEXT COLLATE "C" PRIMARY KEY,
    permissions TEXT[] NOT NULL,
    on_grant    TEXT[] NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Grants name their object by kind and id; the object may be a receiver or
-- a group, so there is no foreign key.
CREATE TABLE grants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    principal   TEXT COLLATE "C" NOT NULL,
    object_kind TEXT NOT NULL CHECK (object_kind IN ('receiver', 'group')),
    object_id   TEXT COLLATE "C" NOT NULL,
    permissions TEXT[] NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
-- Every request reads the grants of its principal.
CREATE INDEX grants_by_principal ON grants (principal, id);
CREATE INDEX grants_by_object ON grants (object_kind, object_id, id);

CREATE TABLE sessions (
    id             TEXT COLLATE "C" PRIMARY KEY,
    principal      TEXT COLLATE "C" NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT,
    CONSTRAINT sessions_revoked_with_reason
        CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
-- The live sessions of a principal (logout everywhere, user deleted).
CREATE INDEX sessions_live_by_principal ON sessions (principal) WHERE revoked_at IS NULL;

-- Every refresh token ever issued stays (marked used) so that presenting
-- a used one is recognised as reuse.
CREATE TABLE refresh_tokens (
    hash       TEXT COLLATE "C" PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid         TEXT COLLATE "C" PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
-- At most one key signs: nodes racing to create the first one insert with
-- ON CONFLICT on this index and then all read the one that won.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((true)) WHERE retired_at IS NULL;

CREATE TABLE audit_log (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    action      TEXT COLLATE "C" NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    client_addr TEXT NOT NULL
);
-- What one principal did, newest first.
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);

-- The audit log is append-only: any UPDATE, DELETE or TRUNCATE fails,
-- whoever runs it (statement-level, so even one matching no row).
CREATE FUNCTION cairn_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_audit_log_append_only();
