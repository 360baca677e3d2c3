-- The W3C traceparent of the request whose write made the message, for
-- the message's CloudEvents `traceparent` attribute. NULL: none.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
