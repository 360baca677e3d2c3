-- Idempotency keys (issue 6, docs/idempotency.md): one row per (scope,
-- key), claimed in progress, then holding the response to replay. The
-- primary key decides which of several nodes' concurrent claims wins.
-- Expired rows count as absent and are purged a few at a time by claims.
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    token       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    status      INTEGER,
    headers     TEXT,
    body        BYTEA,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK ((state = 'completed') = (status IS NOT NULL))
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
