//! Maildir store (being written).
