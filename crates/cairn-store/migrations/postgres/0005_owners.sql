-- The principal that created a receiver or group (NULL: created while
-- authentication was off, or before owners existed). Nullable without a
-- default, so adding the columns rewrites no row.
ALTER TABLE receivers ADD COLUMN owner TEXT;
ALTER TABLE groups ADD COLUMN owner TEXT;
