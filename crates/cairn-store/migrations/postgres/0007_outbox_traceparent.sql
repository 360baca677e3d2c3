-- The W3C traceparent of the request whose write made the message (event
-- messages and the completion messages they cause), for the message's
-- CloudEvents `traceparent` attribute. NULL: none.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
