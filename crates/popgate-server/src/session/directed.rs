//! A login the directory sends nowhere of its tenant's
//! ([`Tenant::directed_mailbox`]), as the client is told.

use pop3_proto::Code;
use popgate_auth::UserInfo;
use popgate_store::MailboxId;

use crate::Tenant;
use crate::directed::Misdirected;
use crate::observer::LoginResult;

/// Why a verified login is refused, as the client is told.
pub(super) struct Refusal {
    pub result: LoginResult,
    pub code: Code,
    pub text: &'static str,
}

/// The mailbox a verified login opens, or the refusal the client gets.
pub(super) fn mailbox(
    tenant: &Tenant,
    login: MailboxId,
    user: &UserInfo,
) -> Result<MailboxId, Refusal> {
    tenant
        .directed_mailbox(login, user)
        .map_err(|why| match why {
            Misdirected::NotThisTenant => Refusal {
                result: LoginResult::PermError,
                code: Code::SysPerm,
                text: "This login's mailbox is misconfigured.",
            },
            // [SYS/TEMP], not [AUTH]: the password was right, so the client
            // must not ask for another; the operator's row is wrong, and once
            // fixed the same login works.
            Misdirected::BadLocation => Refusal {
                result: LoginResult::TempError,
                code: Code::SysTemp,
                text: "This login's mailbox location is misconfigured, try again later.",
            },
        })
}
