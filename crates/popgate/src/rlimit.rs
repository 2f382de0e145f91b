//! Open files: a service manager or PAM starts popgate with a soft
//! `RLIMIT_NOFILE` of 1,024, far below what `server.max_connections` needs
//! (a socket each, and a file each while a Maildir message streams). At
//! start popgate raises the soft limit to what the config needs, up to the
//! hard limit, and says so when the hard limit is too low.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors needed besides the POP3 sockets: listeners, the metrics
/// endpoint, database and Redis pools, passwd-files, log output.
const HEADROOM: u64 = 256;

/// What the soft limit became, and whether the hard limit was too low.
#[derive(Debug, PartialEq, Eq)]
pub struct Raised {
    pub before: Option<u64>,
    pub now: Option<u64>,
    /// The hard limit, when it is below what `max_connections` needs.
    pub short_of: Option<(u64, u64)>,
}

/// Open files `max_connections` sessions need: a socket each, and a
/// message file for the (fewer) sessions streaming one from a Maildir.
pub fn needed(max_connections: usize) -> u64 {
    let n = max_connections as u64;
    n.saturating_add(n / 8).saturating_add(HEADROOM)
}

/// Raises the soft limit towards `needed` (never lowers it).
pub fn raise(needed: u64) -> std::io::Result<Raised> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let want = match maximum {
        Some(hard) => needed.min(hard),
        None => needed,
    };
    let now = match current {
        Some(soft) if soft < want => {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(want),
                    maximum,
                },
            )?;
            Some(want)
        }
        other => other,
    };
    let short_of = maximum
        .filter(|&hard| hard < needed)
        .map(|hard| (hard, needed));
    Ok(Raised {
        before: current,
        now,
        short_of,
    })
}

/// Raises the limit for `max_connections` and logs what happened.
pub fn raise_for(max_connections: usize) {
    match raise(needed(max_connections)) {
        Ok(r) => {
            if r.before != r.now {
                tracing::info!(
                    from = r.before.unwrap_or(u64::MAX),
                    to = r.now.unwrap_or(u64::MAX),
                    "raised the open-files limit (RLIMIT_NOFILE) for server.max_connections"
                );
            }
            if let Some((hard, needed)) = r.short_of {
                tracing::warn!(
                    hard_limit = hard,
                    needed,
                    max_connections,
                    "server.max_connections needs {needed} open files but the hard RLIMIT_NOFILE is {hard}: \
                     connections past about {} will be refused (raise LimitNOFILE= or ulimit -Hn, or lower server.max_connections)",
                    hard.saturating_sub(HEADROOM) * 8 / 9
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit (RLIMIT_NOFILE)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_the_soft_limit_up_to_the_hard_one() {
        let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
        let hard = maximum.unwrap_or(1 << 20);
        // Lower the soft limit as a service manager would start us.
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard.min(1024)),
                maximum,
            },
        )
        .unwrap();
        let r = raise(hard + 1000).unwrap();
        assert_eq!(r.before, Some(hard.min(1024)));
        assert_eq!(r.now, Some(hard));
        assert_eq!(r.short_of, maximum.map(|h| (h, hard + 1000)));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
        // Never lowered.
        let r = raise(16).unwrap();
        assert_eq!(
            (r.before, r.now, r.short_of),
            (Some(hard), Some(hard), None)
        );
    }
}
