-- Per-user mailbox location (Dovecot's userdb `mail`): where this user's
-- Maildir is, `maildir:/var/vmail/d/u/Maildir` or a bare path, `%n`, `%d`,
-- `%u` expanded, confined to the tenant's Maildir root (a login or a
-- delivery to a location outside it is refused, [SYS/TEMP]). NULL: the
-- tenant's path template, as before this column. Stores without paths
-- (PostgreSQL, S3) ignore it. Existing rows keep NULL.
ALTER TABLE users ADD COLUMN location text;
