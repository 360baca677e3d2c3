//! Who may do what: permissions (`resource:action`, with wildcards), roles,
//! grants on single receivers and groups, ownership, and [`decide`], the one
//! policy function every entry point (REST, GraphQL, CLI) asks.
//!
//! A role carries two lists. `permissions` hold everywhere. `on_grant` hold
//! only on an object (a receiver or a group) the principal owns or was
//! granted that permission on. So the built-in `producer` may post events
//! (`events:create` is in its `on_grant`) but only to receivers it was
//! granted; without a grant it posts nowhere. A grant to a principal whose
//! roles do not list the action in `on_grant` confers nothing: roles bound
//! what grants can give.

use crate::id::{GroupId, ReceiverId};
use std::fmt;

/// What a permission is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Receivers,
    Events,
    Groups,
    DeadLetters,
    Users,
    Keys,
    Roles,
    Grants,
    Audit,
    Metrics,
}

impl Resource {
    pub const ALL: [Resource; 10] = [
        Resource::Receivers,
        Resource::Events,
        Resource::Groups,
        Resource::DeadLetters,
        Resource::Users,
        Resource::Keys,
        Resource::Roles,
        Resource::Grants,
        Resource::Audit,
        Resource::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Receivers => "receivers",
            Resource::Events => "events",
            Resource::Groups => "groups",
            Resource::DeadLetters => "dead_letters",
            Resource::Users => "users",
            Resource::Keys => "keys",
            Resource::Roles => "roles",
            Resource::Grants => "grants",
            Resource::Audit => "audit",
            Resource::Metrics => "metrics",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What is done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Create, Action::Update, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One concrete permission, e.g. `events:create`: what a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub resource: Resource,
    pub action: Action,
}

impl Permission {
    pub const fn new(resource: Resource, action: Action) -> Self {
        Self { resource, action }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.action.as_str())
    }
}

/// A permission as a role or grant holds it: `resource:action`, where
/// either part may be `*`; `*` alone means `*:*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PermissionPattern {
    /// `None` matches every resource.
    pub resource: Option<Resource>,
    /// `None` matches every action.
    pub action: Option<Action>,
}

/// Why a permission pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("{0:?} is not of the form resource:action")]
    Shape(String),
    #[error("unknown resource {0:?} (known: {known})", known = known_resources())]
    Resource(String),
    #[error("unknown action {0:?} (known: read, create, update, delete)")]
    Action(String),
}

fn known_resources() -> String {
    Resource::ALL.map(Resource::as_str).join(", ")
}

impl PermissionPattern {
    pub const ALL: PermissionPattern = PermissionPattern {
        resource: None,
        action: None,
    };

    pub const fn exact(resource: Resource, action: Action) -> Self {
        Self {
            resource: Some(resource),
            action: Some(action),
        }
    }

    /// Parse `events:create`, `events:*`, `*:read`, `*:*` or `*`. Names are
    /// exact (lower case); an unknown one is an error, so a typo in a role
    /// never silently grants nothing (or everything).
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s == "*" {
            return Ok(Self::ALL);
        }
        let Some((resource, action)) = s.split_once(':') else {
            return Err(PatternError::Shape(s.to_owned()));
        };
        let resource = match resource {
            "*" => None,
            r => Some(Resource::parse(r).ok_or_else(|| PatternError::Resource(r.to_owned()))?),
        };
        let action = match action {
            "*" => None,
            a => Some(Action::parse(a).ok_or_else(|| PatternError::Action(a.to_owned()))?),
        };
        Ok(Self { resource, action })
    }

    pub fn matches(&self, p: Permission) -> bool {
        self.resource.is_none_or(|r| r == p.resource) && self.action.is_none_or(|a| a == p.action)
    }
}

impl fmt::Display for PermissionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.resource.map_or("*", Resource::as_str);
        let action = self.action.map_or("*", Action::as_str);
        write!(f, "{resource}:{action}")
    }
}

impl serde::Serialize for PermissionPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A role's name: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, starting
/// with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a role name (1-64 characters of a-z, 0-9, - and _, starting with a letter)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// One of the roles every installation has (they cannot be changed).
    pub fn is_builtin(&self) -> bool {
        BUILTIN_ROLES.contains(&self.0.as_str())
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const BUILTIN_ROLES: [&str; 4] = ["admin", "maintainer", "producer", "reader"];

/// A named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: RoleName,
    /// Hold on everything.
    pub permissions: Vec<PermissionPattern>,
    /// Hold only on objects the principal owns or was granted them on.
    pub on_grant: Vec<PermissionPattern>,
}

impl Role {
    /// `admin`, `maintainer`, `producer` or `reader`.
    pub fn builtin(name: &str) -> Option<Role> {
        use Action::*;
        use Resource::*;
        let p = PermissionPattern::exact;
        let any = |r| PermissionPattern {
            resource: Some(r),
            action: None,
        };
        let read_registry = vec![p(Receivers, Read), p(Events, Read), p(Groups, Read)];
        let (permissions, on_grant) = match name {
            "admin" => (vec![PermissionPattern::ALL], vec![]),
            // Runs the registry: receivers, groups, events and delivery;
            // not identities, grants or the audit log.
            "maintainer" => (
                vec![
                    any(Receivers),
                    any(Events),
                    any(Groups),
                    any(DeadLetters),
                    p(Metrics, Read),
                ],
                vec![],
            ),
            // Reads the registry; posts events, and changes receivers and
            // groups, only where granted (or owned).
            "producer" => (
                read_registry,
                vec![p(Events, Create), p(Receivers, Update), p(Groups, Update)],
            ),
            "reader" => (read_registry, vec![]),
            _ => return None,
        };
        Some(Role {
            name: RoleName(name.to_owned()),
            permissions,
            on_grant,
        })
    }
}

/// A single object a permission can be granted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectRef {
    Receiver(ReceiverId),
    Group(GroupId),
}

/// A permission on one object, given to one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub object: ObjectRef,
    pub permissions: Vec<PermissionPattern>,
}

/// Who is asking: resolved roles and grants of one authenticated principal.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub principal: &'a str,
    pub roles: &'a [Role],
    pub grants: &'a [Grant],
}

/// The object a request acts on, when it acts on one: the receiver an event
/// is posted to, the receiver or group being changed.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub object: ObjectRef,
    /// The principal that created it, if known.
    pub owner: Option<&'a str>,
}

/// What a request needs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub permission: Permission,
    pub target: Option<Target<'a>>,
}

/// The answer, with the reason (for the audit log and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A role holds the permission everywhere.
    AllowedByRole(RoleName),
    /// The principal owns the target and a role allows that on owned objects.
    AllowedAsOwner(RoleName),
    /// A grant on the target gives it and a role allows that on granted objects.
    AllowedByGrant(RoleName),
    Denied {
        needed: Permission,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Decision::Denied { .. })
    }
}

/// The policy: may `subject` do `request`?
///
/// Allowed when some role lists the permission in `permissions`; or the
/// request has a target and some role lists the permission in `on_grant`
/// and the subject either owns the target or holds a grant on it that
/// matches the permission. Everything else is denied.
pub fn decide(subject: &Subject<'_>, request: &Request<'_>) -> Decision {
    let needed = request.permission;
    if let Some(role) = subject
        .roles
        .iter()
        .find(|r| r.permissions.iter().any(|p| p.matches(needed)))
    {
        return Decision::AllowedByRole(role.name.clone());
    }
    let Some(target) = request.target else {
        return Decision::Denied { needed };
    };
    let Some(role) = subject
        .roles
        .iter()
        .find(|r| r.on_grant.iter().any(|p| p.matches(needed)))
    else {
        return Decision::Denied { needed };
    };
    if target.owner == Some(subject.principal) {
        return Decision::AllowedAsOwner(role.name.clone());
    }
    let granted = subject
        .grants
        .iter()
        .filter(|g| g.object == target.object)
        .any(|g| g.permissions.iter().any(|p| p.matches(needed)));
    if granted {
        Decision::AllowedByGrant(role.name.clone())
    } else {
        Decision::Denied { needed }
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A local user's access token.
    User,
    /// An API key.
    ApiKey,
    /// A bearer token from the configured OIDC issuer.
    Oidc,
    /// Authentication is off: everyone may do everything.
    Anonymous,
}

/// An authenticated caller with everything [`decide`] needs, resolved once
/// per request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `user:<name>`, `key:<id>`, `oidc:<subject>` or `anonymous`.
    pub id: String,
    pub kind: PrincipalKind,
    pub roles: Vec<Role>,
    /// When not empty, a request must also match one of these (an API
    /// key's scopes): scopes only narrow what the roles allow.
    pub scopes: Vec<PermissionPattern>,
    pub grants: Vec<Grant>,
    /// The login session of a user's access token.
    pub session: Option<String>,
    /// The API key used, if any (its public id).
    pub key_id: Option<String>,
}

impl Principal {
    /// Everyone, when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            id: "anonymous".to_owned(),
            kind: PrincipalKind::Anonymous,
            roles: Role::builtin("admin").into_iter().collect(),
            scopes: Vec::new(),
            grants: Vec::new(),
            session: None,
            key_id: None,
        }
    }

    /// [`decide`] for this principal, within its scopes.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        let needed = request.permission;
        if !self.scopes.is_empty() && !self.scopes.iter().any(|s| s.matches(needed)) {
            return Decision::Denied { needed };
        }
        decide(
            &Subject {
                principal: &self.id,
                roles: &self.roles,
                grants: &self.grants,
            },
            request,
        )
    }

    /// Whether the principal holds the permission everywhere (no target).
    pub fn may(&self, resource: Resource, action: Action) -> bool {
        self.decide(&Request {
            permission: Permission::new(resource, action),
            target: None,
        })
        .is_allowed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Resource::*;
    use ulid::Ulid;

    fn role(name: &str) -> Role {
        Role::builtin(name).unwrap()
    }

    fn receiver() -> ObjectRef {
        ObjectRef::Receiver(ReceiverId::new(Ulid::new()))
    }

    fn ask(
        roles: &[Role],
        grants: &[Grant],
        permission: Permission,
        target: Option<Target>,
    ) -> Decision {
        decide(
            &Subject {
                principal: "me",
                roles,
                grants,
            },
            &Request { permission, target },
        )
    }

    #[test]
    fn patterns_parse_with_wildcards_and_refuse_unknown_names() {
        let p = |s| PermissionPattern::parse(s).map(|p| p.to_string());
        assert_eq!(p("events:create").as_deref(), Ok("events:create"));
        assert_eq!(p("events:*").as_deref(), Ok("events:*"));
        assert_eq!(p("*:read").as_deref(), Ok("*:read"));
        assert_eq!(p("*").as_deref(), Ok("*:*"));
        assert_eq!(p("*:*").as_deref(), Ok("*:*"));
        assert_eq!(
            p("dead_letters:update").as_deref(),
            Ok("dead_letters:update")
        );
        assert!(
            matches!(PermissionPattern::parse("event:create"), Err(PatternError::Resource(r)) if r == "event")
        );
        assert!(
            matches!(PermissionPattern::parse("events:write"), Err(PatternError::Action(a)) if a == "write")
        );
        assert!(matches!(
            PermissionPattern::parse("events"),
            Err(PatternError::Shape(_))
        ));
        assert!(PermissionPattern::parse("Events:create").is_err());
        assert!(PermissionPattern::parse("events:create:x").is_err());
        assert!(PermissionPattern::parse("").is_err());
    }

    #[test]
    fn wildcards_match_what_they_say() {
        let events_any = PermissionPattern::parse("events:*").unwrap();
        let any_read = PermissionPattern::parse("*:read").unwrap();
        for r in Resource::ALL {
            for a in Action::ALL {
                let p = Permission::new(r, a);
                assert_eq!(events_any.matches(p), r == Events, "{p}");
                assert_eq!(any_read.matches(p), a == Read, "{p}");
                assert!(PermissionPattern::ALL.matches(p));
                assert!(PermissionPattern::exact(r, a).matches(p));
            }
        }
        assert!(!PermissionPattern::exact(Events, Create).matches(Permission::new(Events, Read)));
    }

    #[test]
    fn builtin_roles_hold_what_their_names_say() {
        let global = |name: &str, p: Permission| ask(&[role(name)], &[], p, None).is_allowed();
        for r in Resource::ALL {
            for a in Action::ALL {
                let p = Permission::new(r, a);
                assert!(global("admin", p), "admin {p}");
                let registry = matches!(r, Receivers | Events | Groups | DeadLetters);
                assert_eq!(
                    global("maintainer", p),
                    registry || p == Permission::new(Metrics, Read),
                    "maintainer {p}"
                );
                let reads = a == Read && matches!(r, Receivers | Events | Groups);
                assert_eq!(global("producer", p), reads, "producer {p}");
                assert_eq!(global("reader", p), reads, "reader {p}");
            }
        }
        assert!(Role::builtin("root").is_none());
    }

    #[test]
    fn a_producer_posts_only_where_granted_or_owned() {
        let (granted, other, owned) = (receiver(), receiver(), receiver());
        let grants = [Grant {
            object: granted,
            permissions: vec![PermissionPattern::exact(Events, Create)],
        }];
        let producer = [role("producer")];
        let post = |object, owner| {
            ask(
                &producer,
                &grants,
                Permission::new(Events, Create),
                Some(Target { object, owner }),
            )
        };
        assert_eq!(
            post(granted, Some("someone")),
            Decision::AllowedByGrant(RoleName("producer".into()))
        );
        assert_eq!(
            post(other, Some("someone")),
            Decision::Denied {
                needed: Permission::new(Events, Create)
            }
        );
        assert_eq!(
            post(owned, Some("me")),
            Decision::AllowedAsOwner(RoleName("producer".into()))
        );
        // No target: no grant can apply.
        assert!(!ask(&producer, &grants, Permission::new(Events, Create), None).is_allowed());
        // Creating receivers or groups needs a role that allows it.
        assert!(!ask(&producer, &grants, Permission::new(Receivers, Create), None).is_allowed());
        assert!(!ask(&producer, &grants, Permission::new(Groups, Create), None).is_allowed());
    }

    #[test]
    fn a_grant_gives_only_its_permissions_on_its_object() {
        let r = receiver();
        let grants = [Grant {
            object: r,
            permissions: vec![PermissionPattern::exact(Events, Create)],
        }];
        let target = Some(Target {
            object: r,
            owner: None,
        });
        let producer = [role("producer")];
        assert!(ask(&producer, &grants, Permission::new(Events, Create), target).is_allowed());
        // producer's on_grant lists receivers:update, but this grant does not.
        assert!(
            !ask(
                &producer,
                &grants,
                Permission::new(Receivers, Update),
                target
            )
            .is_allowed()
        );
        assert!(
            !ask(
                &producer,
                &grants,
                Permission::new(Receivers, Delete),
                target
            )
            .is_allowed()
        );
    }

    #[test]
    fn roles_bound_what_grants_and_ownership_give() {
        let r = receiver();
        let grants = [Grant {
            object: r,
            permissions: vec![PermissionPattern::ALL],
        }];
        let target = Some(Target {
            object: r,
            owner: Some("me"),
        });
        let reader = [role("reader")];
        assert!(!ask(&reader, &grants, Permission::new(Events, Create), target).is_allowed());
        let producer = [role("producer")];
        // Deleting is not in producer's on_grant, so neither the grant nor
        // ownership allows it.
        assert!(
            !ask(
                &producer,
                &grants,
                Permission::new(Receivers, Delete),
                target
            )
            .is_allowed()
        );
        // No roles at all: nothing.
        assert!(!ask(&[], &grants, Permission::new(Events, Read), target).is_allowed());
    }

    #[test]
    fn custom_roles_combine_with_builtin_ones() {
        let team_lead = Role {
            name: RoleName::parse("team-lead").unwrap(),
            permissions: vec![PermissionPattern::exact(Receivers, Create)],
            on_grant: vec![PermissionPattern::parse("events:*").unwrap()],
        };
        let roles = [role("reader"), team_lead];
        let mine = Some(Target {
            object: receiver(),
            owner: Some("me"),
        });
        assert!(ask(&roles, &[], Permission::new(Receivers, Create), None).is_allowed());
        assert!(ask(&roles, &[], Permission::new(Events, Create), mine).is_allowed());
        assert!(ask(&roles, &[], Permission::new(Events, Read), None).is_allowed());
        assert!(!ask(&roles, &[], Permission::new(Groups, Create), None).is_allowed());
    }

    #[test]
    fn role_names_are_checked() {
        assert!(RoleName::parse("team-lead_2").is_ok());
        for bad in ["", "Admin", "2fast", "a b", "x".repeat(65).as_str(), "é"] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RoleName::parse("producer").unwrap().is_builtin());
        assert!(!RoleName::parse("team").unwrap().is_builtin());
    }
}
