-- Delivery state per sink (docs/delivery.md): how far each sink got, the
-- messages it gave up on, and the dead letters queued to be sent again.
CREATE TABLE outbox_cursors (
    sink     TEXT COLLATE "C" PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

CREATE TABLE outbox_dead_letters (
    sink       TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL REFERENCES outbox (seq),
    message_id TEXT COLLATE "C" NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    failed_at  BIGINT NOT NULL,
    PRIMARY KEY (sink, seq)
);

CREATE TABLE outbox_replays (
    sink TEXT COLLATE "C" NOT NULL,
    seq  BIGINT NOT NULL REFERENCES outbox (seq),
    PRIMARY KEY (sink, seq)
);
