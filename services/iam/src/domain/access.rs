//! Custom roles, role assignments and the policy decision over them (pure).
use std::collections::BTreeSet;

use super::roles::{built_in, scope_contains, ANY_PRINCIPAL};

/// A tenant-defined role: `tenants/{tenant_id}/roles/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRole {
    pub tenant_id: String,
    pub id: String,
    pub title: String,
    pub description: String,
    pub permissions: BTreeSet<String>,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// `tenants/{tenant_id}/roleAssignments/{id}`: `principal` holds `role` on `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub tenant_id: String,
    pub id: String,
    pub principal: String,
    pub role: String,
    pub scope: String,
    pub description: String,
    pub expire_at_us: Option<i64>,
    pub creator: String,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

impl Assignment {
    pub fn name(&self) -> String {
        format!("tenants/{}/roleAssignments/{}", self.tenant_id, self.id)
    }
    pub fn active_at(&self, now_us: i64) -> bool {
        self.expire_at_us.is_none_or(|t| t > now_us)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    pub assignment: Option<String>,
    pub role: Option<String>,
}

/// Decides `permission` on `resource` for a principal with these assignments. `custom` looks
/// up a custom role's permissions by name (`tenants/t/roles/r`).
pub fn decide(
    assignments: &[Assignment],
    permission: &str,
    resource: &str,
    now_us: i64,
    custom: &dyn Fn(&str) -> Option<BTreeSet<String>>,
) -> Decision {
    // Held by every signed-in principal, but only on resources outside any tenant or inside a
    // tenant the principal belongs to (or by a platform-wide assignment).
    let fenced = |t: &str| {
        assignments
            .iter()
            .any(|a| a.tenant_id == t || a.scope.is_empty())
    };
    if ANY_PRINCIPAL.contains(&permission)
        && !assignments.is_empty()
        && maxai_kit::auth::tenant_of(resource).is_none_or(fenced)
    {
        return Decision {
            allowed: true,
            reason: format!("{permission} is held by every signed-in principal"),
            assignment: None,
            role: None,
        };
    }
    for a in assignments.iter().filter(|a| a.active_at(now_us)) {
        if !scope_contains(&a.scope, resource) {
            continue;
        }
        let holds = match a.role.strip_prefix("roles/") {
            Some(id) => built_in(id).is_some_and(|r| r.permissions.contains(permission)),
            None => custom(&a.role).is_some_and(|p| p.contains(permission)),
        };
        if holds {
            let on = if a.scope.is_empty() {
                "the platform".to_owned()
            } else {
                a.scope.clone()
            };
            return Decision {
                allowed: true,
                reason: format!("granted by {} on {on}", a.role),
                assignment: Some(a.name()),
                role: Some(a.role.clone()),
            };
        }
    }
    let on = if resource.is_empty() {
        "the platform"
    } else {
        resource
    };
    Decision {
        allowed: false,
        reason: format!("no role grants {permission} on {on}"),
        assignment: None,
        role: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(role: &str, scope: &str, expire: Option<i64>) -> Assignment {
        Assignment {
            tenant_id: "a".into(),
            id: "1".into(),
            principal: "tenants/a/users/u".into(),
            role: role.into(),
            scope: scope.into(),
            description: String::new(),
            expire_at_us: expire,
            creator: String::new(),
            revision: 1,
            created_at_us: 0,
            updated_at_us: 0,
        }
    }

    #[test]
    fn decisions_follow_role_scope_and_expiry() {
        let none = |_: &str| None;
        let admin = [assignment("roles/tenant-admin", "tenants/a", None)];
        assert!(
            decide(
                &admin,
                "iam.clients.delete",
                "tenants/a/clients/x",
                10,
                &none
            )
            .allowed
        );
        let d = decide(
            &admin,
            "iam.clients.delete",
            "tenants/b/clients/x",
            10,
            &none,
        );
        assert!(!d.allowed && d.reason.contains("no role grants"));
        assert!(!decide(&admin, "flags.flags.create", "flags/x", 10, &none).allowed);
        let viewer = [assignment(
            "roles/client-viewer",
            "tenants/a/clients/x",
            None,
        )];
        assert!(decide(&viewer, "iam.clients.get", "tenants/a/clients/x", 10, &none).allowed);
        assert!(
            !decide(
                &viewer,
                "iam.clients.update",
                "tenants/a/clients/x",
                10,
                &none
            )
            .allowed
        );
        assert!(!decide(&viewer, "iam.clients.get", "tenants/a/clients/y", 10, &none).allowed);
        let expired = [assignment("roles/tenant-admin", "tenants/a", Some(5))];
        assert!(
            !decide(
                &expired,
                "iam.clients.get",
                "tenants/a/clients/x",
                10,
                &none
            )
            .allowed
        );
        let custom = [assignment("tenants/a/roles/publisher", "tenants/a", None)];
        let lookup = |name: &str| {
            (name == "tenants/a/roles/publisher")
                .then(|| BTreeSet::from(["prompt.instances.publish".to_owned()]))
        };
        assert!(
            decide(
                &custom,
                "prompt.instances.publish",
                "tenants/a/clients/x/promptInstances/p",
                10,
                &lookup
            )
            .allowed
        );
        assert!(decide(&viewer, "flags.flags.evaluate", "flags/x", 10, &none).allowed);
        assert!(!decide(&[], "flags.flags.evaluate", "flags/x", 10, &none).allowed);
    }
}
