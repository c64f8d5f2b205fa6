//! The one authorisation policy: *may this signer record this kind of event
//! for this actor?*
//!
//! Every event names an actor (the principal that caused it, PROV
//! `wasAssociatedWith`) and is signed by a key of some principal (the signer).
//! The ledger's sequencer enforces [`authorise`] on both before it appends a
//! leaf; `clew verify` replays it over the whole log; the API asks
//! [`actor_may`] before it signs anything for a caller, so a caller hears the
//! same answer the ledger would give.
//!
//! ```text
//!   kind ──▶ roles the ACTOR needs (admin holds every role)
//!   signer == actor            → the actor signs for itself
//!   signer != actor            → the signer holds SERVICE (signs on behalf of
//!                                registered actors), and only what the actor may do
//! ```
//!
//! Roles are each principal's roles at its latest registration before the
//! event (re-registering a principal changes them).
//!
//! Roles say *which kinds* an actor may record. Projects and access requests
//! add rules that depend on *which entity*: nobody reviews their own request,
//! site governance decides only for its own site's restricted data, a decided
//! request stays decided. Those are [`duties`], read from a small set of
//! [`Fact`]s the ledger keeps beside its state (and `clew verify` rebuilds by
//! replaying the log), through the same function.

mod duties;

pub use duties::{duties, state_name, DutyRefusal, Fact, FactStore, GovernanceScope};

use crate::proto::{event::Body, EventKind, Role};

/// A principal as the policy sees it: its id and its current roles.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    /// Principal id.
    pub id: &'a str,
    /// Roles from its latest registration (proto enum numbers, as stored).
    pub roles: &'a [i32],
}

impl Party<'_> {
    fn holds(&self, role: Role) -> bool {
        self.roles.contains(&(role as i32))
    }

    /// Whether it holds any of `roles`; admin holds every role but SERVICE.
    pub fn holds_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.holds(*r)) || self.holds(Role::Admin)
    }
}

/// Why the policy refuses an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    /// The actor's roles do not allow this kind.
    #[error("{kind} needs one of the roles {needed}; actor principal/{actor} has {held}")]
    ActorLacksRole {
        /// Event kind (e.g. `DATASET_REGISTERED`).
        kind: String,
        /// Acceptable roles.
        needed: String,
        /// Actor id.
        actor: String,
        /// Roles the actor holds.
        held: String,
    },
    /// The signer signs for another actor without the SERVICE role.
    #[error(
        "principal {signer} signed an event whose actor is principal/{actor}; signing on behalf of \
         another principal needs the role SERVICE, and {signer} has {held}"
    )]
    NotADelegate {
        /// Signer principal id.
        signer: String,
        /// Actor id.
        actor: String,
        /// Roles the signer holds.
        held: String,
    },
}

/// Roles of which the actor needs one to record `kind` (admin may record every
/// kind). `KEY_REVOKED` is also open to the key's own principal
/// ([`authorise`] is told who that is).
pub fn actor_roles(kind: EventKind) -> &'static [Role] {
    use EventKind as K;
    match kind {
        K::PrincipalRegistered | K::KeyRevoked | K::AccessGranted | K::AccessRevoked => {
            &[Role::Admin]
        }
        K::SiteRegistered => &[Role::Governance],
        K::DatasetVersionWithdrawn => &[Role::Governance, Role::Ingest],
        // Partners record lineage from their own platforms (signed envelopes).
        K::DatasetRegistered
        | K::DatasetVersionPublished
        | K::TransformRecorded
        | K::TrainingRunRecorded
        | K::ModelVersionRegistered
        | K::ValidationRecorded
        | K::DeploymentRecorded => &[Role::Ingest, Role::Partner, Role::Governance],
        // A researcher registers a project it leads and manages its members;
        // governance may do both for anyone ([`duties`] checks which).
        K::ProjectRegistered | K::ProjectMemberAdded | K::ProjectMemberRemoved => {
            &[Role::Researcher, Role::Governance]
        }
        // Researchers and partner platforms ask; [`duties`] keeps a request's
        // later steps to its requester.
        K::AccessRequestSubmitted | K::AccessRequestResubmitted | K::AccessRequestWithdrawn => {
            &[Role::Researcher, Role::Partner]
        }
        // Only governance decides.
        K::AccessRequestReviewed => &[Role::Governance],
        K::Unspecified => &[Role::Admin],
    }
}

/// Whether `actor` may record `body`. `key_owner` is the principal a revoked
/// key belongs to (for `KeyRevoked`; a principal may revoke its own keys).
pub fn actor_may(
    body: &Body,
    actor: Party<'_>,
    key_owner: Option<&str>,
) -> Result<(), PolicyRefusal> {
    let kind = crate::kind_of(body);
    if matches!(body, Body::KeyRevoked(_)) && key_owner == Some(actor.id) {
        return Ok(());
    }
    let needed = actor_roles(kind);
    if actor.holds_any(needed) {
        return Ok(());
    }
    Err(PolicyRefusal::ActorLacksRole {
        kind: kind_name(kind),
        needed: role_names(&needed.iter().map(|r| *r as i32).collect::<Vec<_>>()),
        actor: actor.id.to_string(),
        held: role_names(actor.roles),
    })
}

/// The whole rule: the actor may record `body`, and `signer` is the actor
/// itself or a SERVICE principal signing on its behalf.
pub fn authorise(
    body: &Body,
    signer: Party<'_>,
    actor: Party<'_>,
    key_owner: Option<&str>,
) -> Result<(), PolicyRefusal> {
    if signer.id != actor.id && !signer.holds(Role::Service) {
        return Err(PolicyRefusal::NotADelegate {
            signer: signer.id.to_string(),
            actor: actor.id.to_string(),
            held: role_names(signer.roles),
        });
    }
    actor_may(body, actor, key_owner)
}

pub(crate) fn kind_name(kind: EventKind) -> String {
    kind.as_str_name()
        .trim_start_matches("EVENT_KIND_")
        .to_string()
}

/// `[A, B]`, role names without their `ROLE_` prefix (`[]` for none).
pub fn role_names(roles: &[i32]) -> String {
    let names: Vec<&str> = roles
        .iter()
        .map(|r| {
            Role::try_from(*r)
                .map(|r| r.as_str_name().trim_start_matches("ROLE_"))
                .unwrap_or("?")
        })
        .collect();
    format!("[{}]", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn a_service_signs_only_what_its_actor_may() {
        let body = sample::site(1);
        let gov = [Role::Governance as i32];
        let res = [Role::Researcher as i32];
        let svc = [Role::Service as i32];
        let service = Party {
            id: "clew-api",
            roles: &svc,
        };
        assert!(authorise(
            &body,
            service,
            Party {
                id: "gina",
                roles: &gov
            },
            None
        )
        .is_ok());
        let refused = authorise(
            &body,
            service,
            Party {
                id: "rita",
                roles: &res,
            },
            None,
        );
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("SITE_REGISTERED needs one of the roles [GOVERNANCE]; actor principal/rita has [RESEARCHER]".into())
        );
        // A governance key may not sign for someone else, even for what both may do.
        let other = authorise(
            &body,
            Party {
                id: "gina",
                roles: &gov,
            },
            Party {
                id: "gus",
                roles: &gov,
            },
            None,
        );
        assert!(matches!(other, Err(PolicyRefusal::NotADelegate { .. })));
    }
}
