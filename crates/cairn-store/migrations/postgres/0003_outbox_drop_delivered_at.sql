-- Delivery state moved to per-sink cursors (0002_delivery.sql), so the
-- outbox's `delivered_at` column and its partial index are never written or
-- read. Dropping the column is a catalogue change (no table rewrite).
DROP INDEX IF EXISTS outbox_undelivered;
ALTER TABLE outbox DROP COLUMN IF EXISTS delivered_at;
