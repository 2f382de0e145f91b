//! Where the directory sends a login: another mailbox of its tenant
//! (Dovecot's `user` field, for an alias) and where that mailbox's mail is
//! (Dovecot's userdb `mail`, checked by the store). One resolution for the
//! POP3 session (after the password) and for `popgate deliver` (after
//! [`popgate_auth::Directory::find_user`]), so that mail is delivered to
//! the mailbox a login opens. Either one, when it is not the tenant's to
//! give, is refused, logged, and opens nothing.

use popgate_auth::UserInfo;
use popgate_store::MailboxId;

use crate::Tenant;

/// Why the directory's answer for a login names no mailbox of its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misdirected {
    /// `user` is no valid name, or names another tenant's domain.
    NotThisTenant,
    /// `location` lies outside the tenant's root, or does not parse.
    BadLocation,
}

impl Tenant {
    /// The mailbox `login` of this tenant opens, as the directory's `user`
    /// says: `login`'s own unless `user.mailbox` names another of this
    /// tenant's, at `user.location` when the directory gave one and the
    /// store takes it (a store without paths ignores it, logged at debug).
    pub fn directed_mailbox(
        &self,
        login: MailboxId,
        user: &UserInfo,
    ) -> Result<MailboxId, Misdirected> {
        let mailbox = match user.mailbox.as_deref() {
            None => login.clone(),
            Some(owner) => self.mailbox_named(owner, &login).ok_or_else(|| {
                tracing::warn!(
                    tenant = %self.name,
                    login = %login.login(),
                    mailbox = %crate::logsafe::account(owner),
                    "the directory named a mailbox that is not this tenant's; refused"
                );
                Misdirected::NotThisTenant
            })?,
        };
        let Some(location) = user.location.as_deref() else {
            return Ok(mailbox);
        };
        match self.store.with_location(mailbox, location) {
            Ok(m) => {
                if m.location.is_none() {
                    tracing::debug!(
                        tenant = %self.name,
                        store = self.store.backend(),
                        "the store has no use for the directory's mailbox location; ignored"
                    );
                }
                Ok(m)
            }
            Err(why) => {
                tracing::warn!(
                    tenant = %self.name,
                    login = %login.login(),
                    location = %location.escape_debug(),
                    reason = %why,
                    "the directory named a mailbox location outside this tenant's root; refused"
                );
                Err(Misdirected::BadLocation)
            }
        }
    }
}
