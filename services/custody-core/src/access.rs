//! Who may do what: user names, roles, and the one table that turns a user's roles into capabilities.
//!
//! Every permission decision in Custody goes through [`Roles::can`] and [`EvidenceScope`], so the rules
//! below are the whole access policy and are unit-tested here, away from HTTP. Stations and recorders
//! are not users: they hold their own credentials (`credential.rs`) and have no roles.

use crate::ids::{BadgeNo, IdError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A login name: 2 to 64 characters, lowercase ASCII letters, digits, `.`, `_` and `-`, starting with a
/// letter. Kept narrow so that it reads unambiguously in audit logs and ledger entries (`user:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let err = |reason: String| IdError {
            field: "username",
            reason,
        };
        if !(2..=64).contains(&s.len()) {
            return Err(err(format!(
                "must be 2 to 64 characters, got {} in {s:?}",
                s.len()
            )));
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(err(format!(
                "must start with a lowercase letter, got {s:?}"
            )));
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(err(format!(
                "may hold only lowercase ASCII letters, digits and . _ -, found {c:?} in {s:?}"
            )));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How the user is named as the actor of ledger events and audit records.
    pub fn actor(&self) -> String {
        format!("user:{}", self.0)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Username {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

/// A role a user account holds. A user may hold several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// 执法人员: sees the footage of recorders they held.
    Officer,
    /// 办案人员: builds cases, links footage, sees what is linked to their cases.
    CaseHandler,
    /// Approves downloads and exports requested by others (never their own); reads every case.
    Supervisor,
    /// 法制审核 / 执法监督: reads everything, changes nothing.
    Auditor,
    /// 指挥中心: live positions, alarms, geofences, stations.
    Commander,
    /// Accounts, officers, recorders, stations.
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Self::Officer,
        Self::CaseHandler,
        Self::Supervisor,
        Self::Auditor,
        Self::Commander,
        Self::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Officer => "officer",
            Self::CaseHandler => "case_handler",
            Self::Supervisor => "supervisor",
            Self::Auditor => "auditor",
            Self::Commander => "commander",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "role: {s:?} is not one of officer, case_handler, supervisor, auditor, commander, admin"
                )
            })
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles; never empty once parsed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = Vec<Role>)
)]
pub struct Roles(u8);

impl Roles {
    pub fn of(roles: &[Role]) -> Result<Self, String> {
        if roles.is_empty() {
            return Err("roles: at least one role is needed".into());
        }
        Ok(Self(roles.iter().fold(0, |acc, r| acc | r.bit())))
    }

    /// Parses a comma-separated list such as `case_handler,supervisor`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let roles = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Role::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Self::of(&roles)
    }

    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }

    /// The comma-separated form stored in the database.
    pub fn to_list(self) -> String {
        self.iter().map(Role::as_str).collect::<Vec<_>>().join(",")
    }

    /// Whether these roles grant `cap`. This match is the whole access policy.
    pub fn can(self, cap: Capability) -> bool {
        use Capability::*;
        use Role::*;
        let any = |roles: &[Role]| roles.iter().any(|r| self.has(*r));
        match cap {
            ReadAllEvidence => any(&[Supervisor, Auditor]),
            ReadAllCases => any(&[Supervisor, Auditor]),
            ManageCases => any(&[CaseHandler, Supervisor]),
            // Asking for a copy is a read: whoever reads evidence may ask (an officer only for their own
            // footage, a handler for what their cases hold; the evidence scope or the case decides),
            // and auditors too, since they change nothing by it. Commanders and admins read no
            // evidence, so they have nothing to ask for.
            RequestCopy => any(&[Officer, CaseHandler, Supervisor, Auditor]),
            // Deciding is for supervisors, and never on one's own request (see `may_decide`).
            ApproveRequests => any(&[Supervisor]),
            ReadAllRequests => any(&[Supervisor, Auditor]),
            ReadCommandCentre => any(&[Commander, Auditor, Admin]),
            DirectCommandCentre => any(&[Commander]),
            ReadPeople => any(&[Admin, Auditor, Supervisor, CaseHandler, Commander]),
            ManagePeople => any(&[Admin]),
            ReadStations => any(&[Admin, Auditor, Commander]),
            ReadAudit => any(&[Auditor, Admin]),
            MarkRetention => any(&[CaseHandler, Supervisor]),
            HoldEvidence => any(&[Supervisor]),
        }
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Roles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Something a request may need. Reads of evidence by officers and case handlers are scoped further by
/// [`EvidenceScope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Every evidence item's metadata and history (auditors, supervisors).
    ReadAllEvidence,
    /// Every case (auditors, supervisors).
    ReadAllCases,
    /// Create cases, add steps, link and unlink footage, explain gaps, move a case along.
    ManageCases,
    /// Ask for a copy of evidence: download an original or export a case (approval before copy). What
    /// may be asked for is scoped further by what the user may read.
    RequestCopy,
    /// Approve or refuse another user's download or export request.
    ApproveRequests,
    /// Every user's copy requests (supervisors, auditors); others read only their own.
    ReadAllRequests,
    /// Live positions, tracks, alarms, geofences (read).
    ReadCommandCentre,
    /// Acknowledge alarms, draw and remove geofences.
    DirectCommandCentre,
    /// The officer registry and recorder check-outs (read).
    ReadPeople,
    /// Accounts, officers, recorder check-outs (write).
    ManagePeople,
    /// Docking stations and their slots.
    ReadStations,
    /// The security audit log.
    ReadAudit,
    /// Mark evidence one can see as showing obstruction of duty, or put it in a longer retention class:
    /// both only keep it longer.
    MarkRetention,
    /// Place or release a legal hold, and clear retention marks: what lets evidence be deleted sooner
    /// is a supervisor's decision.
    HoldEvidence,
}

/// Why a user may not decide a copy request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionRefusal {
    /// Only supervisors decide ([`Capability::ApproveRequests`]).
    NotASupervisor,
    /// Four eyes: nobody decides their own request, whatever their roles.
    OwnRequest,
}

impl fmt::Display for DecisionRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotASupervisor => "only a supervisor approves or refuses copy requests",
            Self::OwnRequest => {
                "nobody approves or refuses their own request; another supervisor must decide it"
            }
        })
    }
}

/// Whether `decider`, holding `roles`, may approve or refuse a copy request made by `requester`
/// (approval before copy, 四眼原则): they must be allowed to approve requests and must not be the
/// requester. This is the whole rule; a supervisor who asks for a copy needs a second supervisor.
pub fn may_decide(
    roles: Roles,
    decider: &Username,
    requester: &Username,
) -> Result<(), DecisionRefusal> {
    if !roles.can(Capability::ApproveRequests) {
        return Err(DecisionRefusal::NotASupervisor);
    }
    if decider == requester {
        return Err(DecisionRefusal::OwnRequest);
    }
    Ok(())
}

/// Which evidence a user may see. The store turns it into a query condition; handlers check single items
/// with the same condition, so a listing and a lookup can never disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceScope {
    /// Everything (auditors, supervisors).
    pub all: bool,
    /// Footage attributed to this officer: recorded while they held the recorder.
    pub officer: Option<BadgeNo>,
    /// Footage linked to a case this user handles.
    pub handler: Option<Username>,
}

impl EvidenceScope {
    /// The scope of a user with `roles`, the officer `badge` of their account and their `username`.
    pub fn of(roles: Roles, badge: Option<&BadgeNo>, username: &Username) -> Self {
        Self {
            all: roles.can(Capability::ReadAllEvidence),
            officer: badge.filter(|_| roles.has(Role::Officer)).cloned(),
            handler: roles.has(Role::CaseHandler).then(|| username.clone()),
        }
    }

    /// Every item: for the server's own work (verification, workers), never for a user.
    pub fn everything() -> Self {
        Self {
            all: true,
            officer: None,
            handler: None,
        }
    }

    /// Whether this scope sees nothing at all (e.g. a commander).
    pub fn is_empty(&self) -> bool {
        !self.all && self.officer.is_none() && self.handler.is_none()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    #[test]
    fn user_names_are_lowercase_ascii_starting_with_a_letter() {
        assert!(Username::parse("zhang.san-01").is_ok());
        assert!(
            Username::parse("Zhang")
                .unwrap_err()
                .to_string()
                .contains("lowercase")
        );
        assert!(Username::parse("1abc").is_err());
        assert!(Username::parse("a").is_err());
        assert!(Username::parse("张三").is_err());
        assert!(
            Username::parse("a b")
                .unwrap_err()
                .to_string()
                .contains("' '")
        );
        assert_eq!(user("li.si").actor(), "user:li.si");
    }

    #[test]
    fn roles_parse_from_a_list_and_print_back_in_a_fixed_order() {
        let r = Roles::parse("supervisor, case_handler").unwrap();
        assert!(r.has(Role::Supervisor) && r.has(Role::CaseHandler) && !r.has(Role::Admin));
        assert_eq!(r.to_list(), "case_handler,supervisor");
        assert_eq!(Roles::parse(&r.to_list()).unwrap(), r);
        assert!(Roles::parse("").unwrap_err().contains("at least one"));
        assert!(
            Roles::parse("root")
                .unwrap_err()
                .contains("\"root\" is not one of")
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"["case_handler","supervisor"]"#
        );
    }

    #[test]
    fn auditors_read_everything_but_change_nothing() {
        let a = Roles::of(&[Role::Auditor]).unwrap();
        for cap in [
            Capability::ReadAllEvidence,
            Capability::ReadAllCases,
            Capability::ReadCommandCentre,
            Capability::ReadPeople,
            Capability::ReadStations,
            Capability::ReadAudit,
            // Asking for a copy is reading; it opens nothing until someone else approves.
            Capability::RequestCopy,
            Capability::ReadAllRequests,
        ] {
            assert!(a.can(cap), "{cap:?}");
        }
        for cap in [
            Capability::ManageCases,
            Capability::ApproveRequests,
            Capability::DirectCommandCentre,
            Capability::ManagePeople,
            Capability::MarkRetention,
            Capability::HoldEvidence,
        ] {
            assert!(!a.can(cap), "{cap:?}");
        }
    }

    #[test]
    fn only_supervisors_approve_and_only_admins_manage_people() {
        for role in Role::ALL {
            let r = Roles::of(&[role]).unwrap();
            assert_eq!(r.can(Capability::ApproveRequests), role == Role::Supervisor);
            assert_eq!(r.can(Capability::ManagePeople), role == Role::Admin);
            assert_eq!(r.can(Capability::HoldEvidence), role == Role::Supervisor);
        }
    }

    #[test]
    fn those_who_read_evidence_may_ask_for_a_copy_and_only_supervisors_and_auditors_read_every_request()
     {
        for role in Role::ALL {
            let r = Roles::of(&[role]).unwrap();
            assert_eq!(
                r.can(Capability::RequestCopy),
                matches!(
                    role,
                    Role::Officer | Role::CaseHandler | Role::Supervisor | Role::Auditor
                ),
                "{role}"
            );
            assert_eq!(
                r.can(Capability::ReadAllRequests),
                matches!(role, Role::Supervisor | Role::Auditor),
                "{role}"
            );
        }
    }

    #[test]
    fn a_request_is_decided_by_a_supervisor_who_is_not_its_requester() {
        let boss = Roles::of(&[Role::Supervisor]).unwrap();
        let everything_else = Roles::of(&[
            Role::Officer,
            Role::CaseHandler,
            Role::Auditor,
            Role::Commander,
            Role::Admin,
        ])
        .unwrap();
        let all = Roles::of(&Role::ALL).unwrap();
        assert_eq!(may_decide(boss, &user("boss"), &user("li")), Ok(()));
        // A supervisor never decides their own request, however many roles they hold.
        assert_eq!(
            may_decide(boss, &user("boss"), &user("boss")),
            Err(DecisionRefusal::OwnRequest)
        );
        assert_eq!(
            may_decide(all, &user("chief"), &user("chief")),
            Err(DecisionRefusal::OwnRequest)
        );
        // Every role but supervisor together still cannot decide.
        assert_eq!(
            may_decide(everything_else, &user("aud"), &user("li")),
            Err(DecisionRefusal::NotASupervisor)
        );
        assert!(
            DecisionRefusal::OwnRequest
                .to_string()
                .contains("another supervisor")
        );
    }

    #[test]
    fn an_officer_sees_their_own_footage_and_a_handler_their_cases() {
        let badge = BadgeNo::parse("0012345").unwrap();
        let officer = EvidenceScope::of(
            Roles::of(&[Role::Officer]).unwrap(),
            Some(&badge),
            &user("zhang"),
        );
        assert_eq!(officer.officer, Some(badge.clone()));
        assert!(!officer.all && officer.handler.is_none());

        let handler = EvidenceScope::of(
            Roles::of(&[Role::CaseHandler]).unwrap(),
            Some(&badge),
            &user("li"),
        );
        assert_eq!(handler.handler, Some(user("li")));
        // A badge alone grants nothing without the officer role.
        assert_eq!(handler.officer, None);

        let commander =
            EvidenceScope::of(Roles::of(&[Role::Commander]).unwrap(), None, &user("cmd"));
        assert!(commander.is_empty());
        let auditor = EvidenceScope::of(Roles::of(&[Role::Auditor]).unwrap(), None, &user("aud"));
        assert!(auditor.all);
    }
}
