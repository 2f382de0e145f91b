//! The fleet's live sessions behind `/admin/sessions` and `/admin/kick`.
//!
//! Every replica lists its own sessions from the process's
//! [`SessionRegistry`]. With Redis locks it also publishes that listing to
//! Redis (`backend_redis::fleet`): at once after a login or an end (at
//! most every [`PUBLISH_SPACING`]), and every `ttl/3` besides, like the
//! lock renewals, so the listing of a replica that died expires with its
//! locks. A listing asked of any replica is its own live one plus the
//! others' published ones (their byte counts at most `ttl/3` old). A kick
//! ends this replica's matching sessions directly and queues the others'
//! session ids for their replicas, which poll every [`KICK_POLL`]. With
//! in-memory locks there is no fleet: both work on this process.

use std::collections::BTreeMap;
use std::sync::Arc;
#[cfg(feature = "redis")]
use std::time::Duration;

use async_trait::async_trait;
use popgate_metrics::{Admin, FleetSession, Listing};
use popgate_server::observer::process_prefix;
use popgate_server::{SessionFilter, SessionId, SessionRegistry};

/// The shortest time between two publications of this replica's listing.
#[cfg(feature = "redis")]
pub(crate) const PUBLISH_SPACING: Duration = Duration::from_millis(100);
/// How often a replica asks Redis for the kicks meant for it.
#[cfg(feature = "redis")]
pub(crate) const KICK_POLL: Duration = Duration::from_millis(250);

/// This process's name in listings: its session-id prefix.
pub(crate) fn replica_name() -> String {
    format!("{:08x}", process_prefix())
}

/// The host name (a pod's name on Kubernetes), or "" if unknown.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

pub(crate) struct FleetAdmin {
    registry: Arc<SessionRegistry>,
    replica: String,
    host: String,
    #[cfg(feature = "redis")]
    fleet: Option<backend_redis::RedisFleet>,
}

impl FleetAdmin {
    /// The sessions of this process only (in-memory locks).
    pub(crate) fn local(registry: Arc<SessionRegistry>) -> Self {
        FleetAdmin {
            registry,
            replica: replica_name(),
            host: host_name(),
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    /// A fleet's sessions through Redis; starts publishing this process's
    /// listing every `refresh` (and at each login and end) and taking its
    /// kicks. Must be called inside the runtime.
    #[cfg(feature = "redis")]
    pub(crate) fn redis(
        registry: Arc<SessionRegistry>,
        locks: &backend_redis::RedisLocks,
        ttl: Duration,
    ) -> Self {
        let replica = replica_name();
        let fleet = backend_redis::RedisFleet::new(locks, &replica, ttl);
        let this = FleetAdmin {
            registry,
            replica,
            host: host_name(),
            fleet: Some(fleet.clone()),
        };
        tokio::spawn(publish(
            this.registry.clone(),
            fleet.clone(),
            this.host.clone(),
            ttl / 3,
        ));
        tokio::spawn(take_kicks(this.registry.clone(), fleet));
        this
    }

    fn own(&self, filter: &SessionFilter) -> Vec<FleetSession> {
        self.registry
            .list(filter)
            .iter()
            .map(|s| FleetSession::local(&self.replica, &self.host, s))
            .collect()
    }
}

#[async_trait]
impl Admin for FleetAdmin {
    async fn sessions(&self, filter: &SessionFilter) -> Listing {
        let mut listing = Listing {
            sessions: self.own(filter),
            replicas: vec![self.replica.clone()],
            errors: Vec::new(),
        };
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            match fleet.listings().await {
                Ok(listings) => {
                    for (replica, records) in listings {
                        if replica == self.replica {
                            continue;
                        }
                        listing.replicas.push(replica.clone());
                        for record in records {
                            match serde_json::from_str::<FleetSession>(&record) {
                                Ok(s) if filter.matches(&s.tenant, &s.user) => {
                                    listing.sessions.push(s)
                                }
                                Ok(_) => {}
                                Err(e) => listing
                                    .errors
                                    .push(format!("replica {replica}: unreadable record: {e}")),
                            }
                        }
                    }
                }
                Err(e) => listing.errors.push(format!(
                    "the other replicas could not be listed (only this one's sessions are shown): {e}"
                )),
            }
        }
        listing.replicas.sort();
        listing
            .sessions
            .sort_by(|a, b| (a.since, &a.replica, &a.id).cmp(&(b.since, &b.replica, &b.id)));
        listing
    }

    async fn kick(&self, filter: &SessionFilter) -> Listing {
        let mut listing = self.sessions(filter).await;
        let mut remote: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut own = Vec::new();
        for s in &listing.sessions {
            if s.replica == self.replica {
                own.extend(s.id.parse::<SessionId>().ok());
            } else {
                remote
                    .entry(s.replica.clone())
                    .or_default()
                    .push(s.id.clone());
            }
        }
        let kicked = self.registry.kick(&own);
        tracing::info!(
            tenant = filter.tenant.as_deref().unwrap_or(""),
            user = filter.user.as_deref().unwrap_or(""),
            here = kicked.len(),
            elsewhere = listing.sessions.len() - own.len(),
            "admin kick"
        );
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            for (replica, ids) in &remote {
                if let Err(e) = fleet.request_kick(replica, ids).await {
                    listing
                        .errors
                        .push(format!("replica {replica}: kick not delivered: {e}"));
                    listing.sessions.retain(|s| &s.replica != replica);
                }
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = remote;
        // Sessions that ended between the listing and the kick.
        listing.sessions.retain(|s| {
            s.replica != self.replica || kicked.iter().any(|k| k.id.to_string() == s.id)
        });
        listing
    }
}

/// Publishes this replica's listing at every login and end (at most every
/// [`PUBLISH_SPACING`]) and every `refresh`.
#[cfg(feature = "redis")]
async fn publish(
    registry: Arc<SessionRegistry>,
    fleet: backend_redis::RedisFleet,
    host: String,
    refresh: Duration,
) {
    let mut changes = registry.changes();
    let mut failing = false;
    loop {
        let records: Vec<(String, String)> = registry
            .list(&SessionFilter::default())
            .iter()
            .filter_map(|s| {
                let record = FleetSession::local(fleet.replica(), &host, s);
                Some((record.id.clone(), serde_json::to_string(&record).ok()?))
            })
            .collect();
        match fleet.publish(&records).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("session listing published to redis again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot publish the session listing to redis; popgate who on other replicas misses this one's sessions");
            }
            Err(_) => {}
        }
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                tokio::time::sleep(PUBLISH_SPACING).await;
            }
            () = tokio::time::sleep(refresh) => {}
        }
    }
}

/// Ends the sessions other replicas asked this one to end.
#[cfg(feature = "redis")]
async fn take_kicks(registry: Arc<SessionRegistry>, fleet: backend_redis::RedisFleet) {
    let mut failing = false;
    loop {
        tokio::time::sleep(KICK_POLL).await;
        match fleet.take_kicks().await {
            Ok(ids) => {
                failing = false;
                if ids.is_empty() {
                    continue;
                }
                let ids: Vec<SessionId> = ids.iter().filter_map(|id| id.parse().ok()).collect();
                let kicked = registry.kick(&ids);
                tracing::info!(
                    asked = ids.len(),
                    kicked = kicked.len(),
                    "admin kick from another replica"
                );
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read kick requests from redis");
            }
            Err(_) => {}
        }
    }
}
