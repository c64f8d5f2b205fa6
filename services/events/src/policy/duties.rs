//! Duties: the rules of the policy that depend on *which* entity an event is
//! about, for projects and access requests.
//!
//! ```text
//!   event + actor ──▶ duties(…, FactStore) ──▶ Ok(fact writes) | DutyRefusal(reason code, detail)
//!                          │ reads
//!                          ▼
//!   Fact per subject: principal organisation, site, dataset custodian + level,
//!                     project lead + members, request requester + terms + state
//! ```
//!
//! The ledger's sequencer keeps the facts in its own store (written in the
//! batch that admits the event); `clew verify` keeps them in memory while it
//! replays the log. Both call [`duties`], so the rules exist once.
//!
//! **How sites' governance is modelled.** A governance principal's scope is
//! its `organisation`: when that is the id of a registered site, the principal
//! is *that site's* governance; otherwise it is *national* governance. A
//! request that names a restricted or controlled dataset may only be reviewed
//! by governance of the dataset's custodian site or by national governance;
//! open datasets by any governance.
//!
//! **Separation of duties.** Nobody reviews a request they made, nor one for a
//! project they lead or belong to; only the requester resubmits or withdraws;
//! only a project's lead (or governance) registers it and changes its members;
//! only the lead asks for a project. A request's states follow
//! `AccessRequestState` in `proto/clew/v1/events.proto`: approved, denied and
//! withdrawn requests are final.

use serde::{Deserialize, Serialize};

use super::Party;
use crate::proto::{
    self, event::Body, AccessLevel, AccessRequestState as S, RejectionReason, Role,
};

/// What the rules remember about one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "fact",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Fact {
    /// A principal's organisation at its latest registration.
    Principal {
        /// Site id (site governance) or any other organisation name.
        organisation: String,
    },
    /// A registered site.
    Site,
    /// A dataset's custodian and access level.
    Dataset {
        /// Custodian site id.
        custodian_site_id: String,
        /// `AccessLevel` number.
        access_level: i32,
    },
    /// A project's lead and current members (the lead is one of them).
    Project {
        /// Lead principal id.
        lead: String,
        /// Current member principal ids.
        members: Vec<String>,
    },
    /// An access request.
    Request {
        /// Principal that submitted it.
        requester: String,
        /// Project it is for ("" when for the requester alone).
        project_id: String,
        /// Every dataset it names (directly or through a version).
        dataset_ids: Vec<String>,
        /// Specific versions asked for.
        dataset_version_ids: Vec<String>,
        /// Days of access asked for.
        requested_days: u32,
        /// `AccessRequestState` number.
        state: i32,
    },
}

/// Where the rules read facts (the ledger's store, or a replay's memory).
pub trait FactStore {
    /// Failure to read.
    type Error;
    /// The fact about `subject` (`<type>/<id>`), if any.
    fn fact(&self, subject: &str) -> Result<Option<Fact>, Self::Error>;
}

/// Whose requests a governance principal may decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovernanceScope {
    /// National governance: any dataset.
    National,
    /// The governance of one site: its own restricted data, and open data.
    Site(String),
}

/// Why [`duties`] refuse an event: a machine-readable reason and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct DutyRefusal {
    /// Reason code, as the rejected log records it.
    pub reason: RejectionReason,
    /// What is wrong, naming the principals and entities.
    pub detail: String,
}

fn refuse(reason: RejectionReason, detail: String) -> DutyRefusal {
    DutyRefusal { reason, detail }
}

/// A principal's governance scope, read from its organisation.
pub fn scope_of<F: FactStore>(store: &F, principal: &str) -> Result<GovernanceScope, F::Error> {
    let organisation = match store.fact(&format!("principal/{principal}"))? {
        Some(Fact::Principal { organisation }) => organisation,
        _ => String::new(),
    };
    if !organisation.is_empty() && store.fact(&format!("site/{organisation}"))? == Some(Fact::Site)
    {
        return Ok(GovernanceScope::Site(organisation));
    }
    Ok(GovernanceScope::National)
}

/// `SUBMITTED`, `UNDER_REVIEW`, … of an `AccessRequestState` number.
pub fn state_name(state: i32) -> String {
    S::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ACCESS_REQUEST_STATE_")
                .to_string()
        })
        .unwrap_or_else(|_| state.to_string())
}

fn is_final(state: i32) -> bool {
    [
        S::Approved,
        S::ApprovedWithConditions,
        S::Denied,
        S::Withdrawn,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

/// Whether a request in state `from` may be moved to `to`.
fn may_move(from: i32, to: S) -> bool {
    let from = S::try_from(from).unwrap_or(S::Unspecified);
    match to {
        S::UnderReview => matches!(from, S::Submitted | S::Resubmitted),
        S::ChangesRequested | S::Approved | S::ApprovedWithConditions | S::Denied => {
            matches!(from, S::Submitted | S::UnderReview | S::Resubmitted)
        }
        S::Resubmitted => from == S::ChangesRequested,
        S::Withdrawn => !is_final(from as i32) && from != S::Unspecified,
        S::Submitted | S::Unspecified => false,
    }
}

/// Every dataset a request's terms name, in order, once.
fn datasets_of(terms: &proto::AccessRequestTerms) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let versions = terms
        .dataset_version_ids
        .iter()
        .map(|v| v.split_once('@').map_or(v.as_str(), |(d, _)| d));
    for d in terms.dataset_ids.iter().map(String::as_str).chain(versions) {
        if !out.iter().any(|o| o == d) {
            out.push(d.to_string());
        }
    }
    out
}

fn request_fact(requester: &str, terms: &proto::AccessRequestTerms, state: S) -> Fact {
    Fact::Request {
        requester: requester.to_string(),
        project_id: terms.project_id.clone(),
        dataset_ids: datasets_of(terms),
        dataset_version_ids: terms.dataset_version_ids.clone(),
        requested_days: terms.requested_days,
        state: state as i32,
    }
}

type Outcome = Result<Vec<(String, Fact)>, DutyRefusal>;

/// Checks the duties of `event` by `actor` against the facts in `store`, and
/// returns the facts the event writes when it is admitted.
pub fn duties<F: FactStore>(
    event: &proto::Event,
    actor: Party<'_>,
    store: &F,
) -> Result<Outcome, F::Error> {
    let Some(body) = &event.body else {
        return Ok(Ok(Vec::new()));
    };
    let governance = actor.holds_any(&[Role::Governance]);
    let who = actor.id;
    Ok(match body {
        Body::PrincipalRegistered(p) => Ok(vec![(
            format!("principal/{}", p.principal_id),
            Fact::Principal {
                organisation: p.organisation.clone(),
            },
        )]),
        Body::SiteRegistered(s) => Ok(vec![(format!("site/{}", s.site_id), Fact::Site)]),
        Body::DatasetRegistered(d) => Ok(vec![(
            format!("dataset/{}", d.dataset_id),
            Fact::Dataset {
                custodian_site_id: d.custodian_site_id.clone(),
                access_level: d.access_level,
            },
        )]),
        Body::ProjectRegistered(p) => {
            if !governance && p.lead_principal_id != who {
                Err(refuse(
                    RejectionReason::Unauthorized,
                    format!(
                        "principal/{who} may register only a project it leads; project/{} names principal/{} as lead",
                        p.project_id, p.lead_principal_id
                    ),
                ))
            } else {
                Ok(vec![(
                    format!("project/{}", p.project_id),
                    Fact::Project {
                        lead: p.lead_principal_id.clone(),
                        members: vec![p.lead_principal_id.clone()],
                    },
                )])
            }
        }
        Body::ProjectMemberAdded(m) => {
            membership(store, who, governance, &m.project_id, &m.principal_id, true)?
        }
        Body::ProjectMemberRemoved(m) => membership(
            store,
            who,
            governance,
            &m.project_id,
            &m.principal_id,
            false,
        )?,
        Body::AccessRequestSubmitted(r) => {
            let terms = r.terms.clone().unwrap_or_default();
            match project_lead_rule(store, who, &terms)? {
                Some(refusal) => Err(refusal),
                None => Ok(vec![(
                    format!("access-request/{}", r.request_id),
                    request_fact(who, &terms, S::Submitted),
                )]),
            }
        }
        Body::AccessRequestResubmitted(r) => {
            let subject = format!("access-request/{}", r.request_id);
            let terms = r.terms.clone().unwrap_or_default();
            match requester_step(store, who, &subject, S::Resubmitted)? {
                Err(refusal) => Err(refusal),
                Ok(_) => match project_lead_rule(store, who, &terms)? {
                    Some(refusal) => Err(refusal),
                    None => Ok(vec![(subject, request_fact(who, &terms, S::Resubmitted))]),
                },
            }
        }
        Body::AccessRequestWithdrawn(r) => {
            let subject = format!("access-request/{}", r.request_id);
            requester_step(store, who, &subject, S::Withdrawn)?
                .map(|fact| vec![(subject, with_state(fact, S::Withdrawn))])
        }
        Body::AccessRequestReviewed(r) => review(store, event, who, r)?,
        _ => Ok(Vec::new()),
    })
}

fn with_state(mut fact: Fact, to: S) -> Fact {
    if let Fact::Request { state, .. } = &mut fact {
        *state = to as i32;
    }
    fact
}

/// A project's lead and current members.
type Members = (String, Vec<String>);

fn project_of<F: FactStore>(
    store: &F,
    project_id: &str,
) -> Result<Result<Members, DutyRefusal>, F::Error> {
    Ok(match store.fact(&format!("project/{project_id}"))? {
        Some(Fact::Project { lead, members }) => Ok((lead, members)),
        _ => Err(refuse(
            RejectionReason::DanglingReference,
            format!("project/{project_id} does not exist"),
        )),
    })
}

fn membership<F: FactStore>(
    store: &F,
    who: &str,
    governance: bool,
    project_id: &str,
    principal: &str,
    add: bool,
) -> Result<Outcome, F::Error> {
    let (lead, mut members) = match project_of(store, project_id)? {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if !governance && lead != who {
        return Ok(Err(refuse(
            RejectionReason::Unauthorized,
            format!(
                "only the lead of project/{project_id} (principal/{lead}) or governance changes its members; principal/{who} is neither"
            ),
        )));
    }
    let present = members.iter().any(|m| m == principal);
    if add {
        if present {
            return Ok(Err(refuse(
                RejectionReason::Conflict,
                format!("principal/{principal} is already a member of project/{project_id}"),
            )));
        }
        members.push(principal.to_string());
    } else {
        if principal == lead {
            return Ok(Err(refuse(
                RejectionReason::Conflict,
                format!("principal/{principal} leads project/{project_id} and stays a member"),
            )));
        }
        if !present {
            return Ok(Err(refuse(
                RejectionReason::Conflict,
                format!("principal/{principal} is not a member of project/{project_id}"),
            )));
        }
        members.retain(|m| m != principal);
    }
    Ok(Ok(vec![(
        format!("project/{project_id}"),
        Fact::Project { lead, members },
    )]))
}

/// Only the lead asks for a project.
fn project_lead_rule<F: FactStore>(
    store: &F,
    who: &str,
    terms: &proto::AccessRequestTerms,
) -> Result<Option<DutyRefusal>, F::Error> {
    if terms.project_id.is_empty() {
        return Ok(None);
    }
    Ok(match project_of(store, &terms.project_id)? {
        Err(refusal) => Some(refusal),
        Ok((lead, _)) if lead != who => Some(refuse(
            RejectionReason::Unauthorized,
            format!(
                "only the lead of project/{} (principal/{lead}) asks for access for it; principal/{who} is not",
                terms.project_id
            ),
        )),
        Ok(_) => None,
    })
}

/// A step only the requester takes (resubmit, withdraw), from a state that
/// allows it; answers the request's fact.
fn requester_step<F: FactStore>(
    store: &F,
    who: &str,
    subject: &str,
    to: S,
) -> Result<Result<Fact, DutyRefusal>, F::Error> {
    let Some(fact @ Fact::Request { .. }) = store.fact(subject)? else {
        return Ok(Err(refuse(
            RejectionReason::DanglingReference,
            format!("{subject} does not exist"),
        )));
    };
    let Fact::Request {
        requester, state, ..
    } = &fact
    else {
        return Ok(Err(refuse(
            RejectionReason::DanglingReference,
            format!("{subject} does not exist"),
        )));
    };
    if requester != who {
        return Ok(Err(refuse(
            RejectionReason::Unauthorized,
            format!("only the requester (principal/{requester}) may change {subject}"),
        )));
    }
    if !may_move(*state, to) {
        return Ok(Err(transition_refusal(subject, *state, to)));
    }
    Ok(Ok(fact))
}

fn transition_refusal(subject: &str, from: i32, to: S) -> DutyRefusal {
    let hint = if is_final(from) {
        "; it is final, so asking again is a new request"
    } else {
        ""
    };
    refuse(
        RejectionReason::InvalidTransition,
        format!(
            "{subject} is {} and cannot become {}{hint}",
            state_name(from),
            state_name(to as i32)
        ),
    )
}

fn review<F: FactStore>(
    store: &F,
    event: &proto::Event,
    who: &str,
    r: &proto::AccessRequestReviewed,
) -> Result<Outcome, F::Error> {
    let subject = format!("access-request/{}", r.request_id);
    let Some(fact) = store.fact(&subject)? else {
        return Ok(Err(refuse(
            RejectionReason::DanglingReference,
            format!("{subject} does not exist"),
        )));
    };
    let Fact::Request {
        requester,
        project_id,
        dataset_ids,
        dataset_version_ids,
        requested_days,
        state,
    } = &fact
    else {
        return Ok(Err(refuse(
            RejectionReason::DanglingReference,
            format!("{subject} is not an access request"),
        )));
    };
    let (requested_days, state) = (*requested_days, *state);
    // Separation of duties: not one's own request, nor one's own project's.
    if requester == who {
        return Ok(Err(refuse(
            RejectionReason::SelfReview,
            format!("principal/{who} submitted {subject} and may not review it"),
        )));
    }
    if !project_id.is_empty() {
        if let Ok((_, members)) = project_of(store, project_id)? {
            if members.iter().any(|m| m == who) {
                return Ok(Err(refuse(
                    RejectionReason::SelfReview,
                    format!(
                        "principal/{who} is a member of project/{project_id}, which {subject} is for, and may not review it"
                    ),
                )));
            }
        }
    }
    let to = S::try_from(r.decision).unwrap_or(S::Unspecified);
    if !may_move(state, to) {
        return Ok(Err(transition_refusal(&subject, state, to)));
    }
    // Scope: restricted data needs its custodian site's or national governance.
    if let GovernanceScope::Site(site) = scope_of(store, who)? {
        for d in dataset_ids {
            if let Some(Fact::Dataset {
                custodian_site_id,
                access_level,
            }) = store.fact(&format!("dataset/{d}"))?
            {
                if access_level != AccessLevel::Open as i32 && custodian_site_id != *site {
                    return Ok(Err(refuse(
                        RejectionReason::OutOfScope,
                        format!(
                            "principal/{who} is governance of site/{site}; dataset/{d} is held by site/{custodian_site_id} and is not open, so only that site's or national governance may review {subject}"
                        ),
                    )));
                }
            }
        }
    }
    if matches!(to, S::Approved | S::ApprovedWithConditions) {
        let grantee = if project_id.is_empty() {
            proto::access_granted::Grantee::PrincipalId(requester.clone())
        } else {
            proto::access_granted::Grantee::ProjectId(project_id.clone())
        };
        let latest = event
            .time
            .as_ref()
            .map_or(0, |t| t.seconds)
            .saturating_add(i64::from(requested_days) * 86_400);
        let mut covered: Vec<&str> = Vec::new();
        for g in &r.grants {
            let problem = if g.request_id != r.request_id {
                Some(format!("names request {:?}", g.request_id))
            } else if g.grantee.as_ref() != Some(&grantee) {
                Some("is not for the request's project or requester".to_string())
            } else if !dataset_ids.contains(&g.dataset_id) {
                Some(format!(
                    "is for dataset/{}, which the request does not name",
                    g.dataset_id
                ))
            } else if covered.contains(&g.dataset_id.as_str()) {
                Some(format!("repeats dataset/{}", g.dataset_id))
            } else if g.expires_at.as_ref().map_or(i64::MAX, |t| t.seconds) > latest {
                Some(format!(
                    "expires later than the {requested_days} days asked for"
                ))
            } else if g.conditions != r.conditions {
                Some("does not carry the decision's conditions".to_string())
            } else if !same_versions(&g.dataset_version_ids, dataset_version_ids, &g.dataset_id) {
                Some("does not cover exactly the versions asked for".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Ok(Err(refuse(
                    RejectionReason::InvalidPayload,
                    format!(
                        "grant {} of the approval of {subject} {problem}",
                        g.grant_id
                    ),
                )));
            }
            covered.push(&g.dataset_id);
        }
        if let Some(missing) = dataset_ids.iter().find(|d| !covered.contains(&d.as_str())) {
            return Ok(Err(refuse(
                RejectionReason::InvalidPayload,
                format!("the approval of {subject} has no grant for dataset/{missing}"),
            )));
        }
    }
    Ok(Ok(vec![(subject, with_state(fact, to))]))
}

/// A grant for `dataset` covers exactly the versions of it the request named
/// (none named: every version).
fn same_versions(granted: &[String], asked: &[String], dataset: &str) -> bool {
    let prefix = format!("{dataset}@");
    let mut want: Vec<&str> = asked
        .iter()
        .filter(|v| v.starts_with(&prefix))
        .map(String::as_str)
        .collect();
    let mut have: Vec<&str> = granted.iter().map(String::as_str).collect();
    want.sort_unstable();
    have.sort_unstable();
    want == have
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn request_states_move_only_along_the_life_cycle() {
        assert!(may_move(S::Submitted as i32, S::UnderReview));
        assert!(may_move(S::UnderReview as i32, S::ChangesRequested));
        assert!(may_move(S::ChangesRequested as i32, S::Resubmitted));
        assert!(may_move(S::Resubmitted as i32, S::ApprovedWithConditions));
        assert!(may_move(S::ChangesRequested as i32, S::Withdrawn));
        assert!(!may_move(S::ChangesRequested as i32, S::Approved));
        assert!(!may_move(S::Denied as i32, S::Approved));
        assert!(!may_move(S::Withdrawn as i32, S::Approved));
        assert!(!may_move(S::Approved as i32, S::Withdrawn));
        assert!(!may_move(S::UnderReview as i32, S::Resubmitted));
    }

    struct Memory(HashMap<String, Fact>);

    impl FactStore for Memory {
        type Error = std::convert::Infallible;
        fn fact(&self, subject: &str) -> Result<Option<Fact>, Self::Error> {
            Ok(self.0.get(subject).cloned())
        }
    }

    #[test]
    fn a_governance_principal_of_a_site_is_that_sites_governance() {
        let mut m = Memory(HashMap::new());
        m.0.insert("site/leeds".into(), Fact::Site);
        m.0.insert(
            "principal/sam".into(),
            Fact::Principal {
                organisation: "leeds".into(),
            },
        );
        m.0.insert(
            "principal/gina".into(),
            Fact::Principal {
                organisation: "National Imaging Platform".into(),
            },
        );
        assert_eq!(
            scope_of(&m, "sam"),
            Ok(GovernanceScope::Site("leeds".into()))
        );
        assert_eq!(scope_of(&m, "gina"), Ok(GovernanceScope::National));
    }
}
