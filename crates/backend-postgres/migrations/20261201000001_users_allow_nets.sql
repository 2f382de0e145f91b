-- Per-user `allow_nets` (Dovecot's extra field): the networks a user may log
-- in from, as a comma-separated list of addresses and networks
-- (`127.0.0.0/8,::1,2001:db8::/32`; `local`: a check without a client
-- address). NULL: from anywhere. A login with the right password from
-- another address fails like a wrong password.
ALTER TABLE users ADD COLUMN allow_nets text;

-- `max_sessions` stays for existing tooling, but popgate does not read it:
-- a mailbox has one session at a time (RFC 1939's exclusive lock), so a
-- per-user cap above 1 could not be honoured.
COMMENT ON COLUMN users.max_sessions IS
    'unused by popgate: one session per mailbox at a time';
