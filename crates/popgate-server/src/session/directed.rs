//! Where the directory sends a verified login: another mailbox of its
//! tenant (Dovecot's `user` field, for an alias) and where that mailbox's
//! mail is (Dovecot's userdb `mail`, checked by the store). Either one,
//! when it is not the tenant's to give, refuses the login and opens
//! nothing.

use pop3_proto::Code;
use popgate_auth::UserInfo;
use popgate_store::MailboxId;

use crate::Tenant;
use crate::observer::LoginResult;

/// Why a verified login is refused, as the client is told.
pub(super) struct Refusal {
    pub result: LoginResult,
    pub code: Code,
    pub text: &'static str,
}

/// The mailbox a verified login opens: `login`'s own, unless the
/// directory's `user` names another of this tenant's, at the directory's
/// `location` when it gave one and the store takes it.
pub(super) fn mailbox(
    tenant: &Tenant,
    login: MailboxId,
    user: &UserInfo,
) -> Result<MailboxId, Refusal> {
    let mailbox = match user.mailbox.as_deref() {
        None => login.clone(),
        Some(owner) => tenant.mailbox_named(owner, &login).ok_or_else(|| {
            tracing::warn!(
                tenant = %tenant.name,
                login = %login.login(),
                mailbox = %crate::logsafe::account(owner),
                "the directory named a mailbox that is not this tenant's; login refused"
            );
            Refusal {
                result: LoginResult::PermError,
                code: Code::SysPerm,
                text: "This login's mailbox is misconfigured.",
            }
        })?,
    };
    let Some(location) = user.location.as_deref() else {
        return Ok(mailbox);
    };
    // [SYS/TEMP], not [AUTH]: the password was right, so the client must
    // not ask for another; the operator's row is wrong, and once fixed the
    // same login works.
    match tenant.store.with_location(mailbox, location) {
        Ok(m) => {
            if m.location.is_none() {
                tracing::debug!(
                    tenant = %tenant.name,
                    store = tenant.store.backend(),
                    "the store has no use for the directory's mailbox location; ignored"
                );
            }
            Ok(m)
        }
        Err(why) => {
            tracing::warn!(
                tenant = %tenant.name,
                login = %login.login(),
                location = %location.escape_debug(),
                reason = %why,
                "the directory named a mailbox location outside this tenant's root; login refused"
            );
            Err(Refusal {
                result: LoginResult::TempError,
                code: Code::SysTemp,
                text: "This login's mailbox location is misconfigured, try again later.",
            })
        }
    }
}
