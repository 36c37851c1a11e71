//! The permission catalogue (read from the contracts' `(maxai.api.v1.auth)` options, so a new
//! RPC's permission exists the moment its contract does), the built-in roles, and the policy
//! rule: a principal holds a permission on a resource when one of its unexpired assignments
//! grants a role holding that permission on a scope containing the resource.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::OnceLock,
};

use maxai_kit::descriptors::{auth_rule, http_rule, pool};
use maxai_proto::google::api::http_rule::Pattern;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScopeKind {
    Platform,
    Tenant,
    Client,
}

/// One permission and where granting it makes sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionInfo {
    pub permission: String,
    /// The RPCs that need it, for the description.
    pub methods: Vec<String>,
    pub scopes: BTreeSet<ScopeKind>,
}

/// Permissions every signed-in principal holds on platform resources; the service checks the
/// tenant inside the request (e.g. a flag is evaluated only for the caller's own tenant).
pub const ANY_PRINCIPAL: &[&str] = &[
    "flags.flags.evaluate",
    "iam.authorizations.check",
    "iam.permissions.list",
    "iam.roles.get",
    "iam.roles.list",
];

const READ_VERBS: &[&str] = &["get", "list", "evaluate", "render", "diff", "verifyChain"];

fn scopes_of(path: &str) -> BTreeSet<ScopeKind> {
    let mut s = BTreeSet::from([ScopeKind::Platform]);
    if path.contains("tenants/") || path.contains("{parent=tenants") {
        s.insert(ScopeKind::Tenant);
    }
    if path.contains("clients/") {
        s.insert(ScopeKind::Client);
    }
    s
}

/// Every permission named by any RPC of the contracts, by name.
pub fn catalogue() -> &'static BTreeMap<String, PermissionInfo> {
    static CATALOGUE: OnceLock<BTreeMap<String, PermissionInfo>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let mut all: BTreeMap<String, PermissionInfo> = BTreeMap::new();
        for service in pool().services() {
            for method in service.methods() {
                let Some(rule) = auth_rule(&method) else {
                    continue;
                };
                if rule.public || rule.permission.is_empty() {
                    continue;
                }
                // Where the RPC's resources live decides the scopes: its REST path, or for
                // internal ports (which act for a client's connection) every scope.
                let scopes = match http_rule(&method).and_then(|h| h.pattern) {
                    Some(
                        Pattern::Get(p)
                        | Pattern::Put(p)
                        | Pattern::Post(p)
                        | Pattern::Delete(p)
                        | Pattern::Patch(p),
                    ) => scopes_of(&p),
                    Some(Pattern::Custom(c)) => scopes_of(&c.path),
                    None if rule.resource_field.starts_with("context") => {
                        BTreeSet::from([ScopeKind::Platform, ScopeKind::Tenant, ScopeKind::Client])
                    }
                    None => BTreeSet::from([ScopeKind::Platform]),
                };
                let entry = all
                    .entry(rule.permission.clone())
                    .or_insert_with(|| PermissionInfo {
                        permission: rule.permission.clone(),
                        methods: Vec::new(),
                        scopes: BTreeSet::new(),
                    });
                entry.methods.push(method.full_name().to_owned());
                entry.scopes.extend(scopes);
            }
        }
        all
    })
}

/// A built-in role: `roles/{id}`.
#[derive(Debug, Clone)]
pub struct BuiltInRole {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub permissions: BTreeSet<String>,
}

fn verb(permission: &str) -> &str {
    permission.rsplit('.').next().unwrap_or("")
}

/// Permissions only the platform's own services hold: a person, however privileged, never
/// reads a connection's secrets in clear.
pub const SERVICE_ONLY: &[&str] = &["iam.connections.getCredential"];

/// The built-in role of the platform's own services (service-to-service calls).
pub const PLATFORM_SERVICE: &str = "platform-service";

/// The built-in roles, derived from the catalogue: five for people and integrations, one for
/// the platform's own services.
pub fn built_in_roles() -> &'static [BuiltInRole] {
    static ROLES: OnceLock<Vec<BuiltInRole>> = OnceLock::new();
    ROLES.get_or_init(|| {
        let cat = catalogue();
        let pick = |f: &dyn Fn(&PermissionInfo) -> bool| -> BTreeSet<String> {
            let mut set: BTreeSet<String> = cat
                .values()
                .filter(|p| f(p))
                .map(|p| p.permission.clone())
                .collect();
            set.extend(ANY_PRINCIPAL.iter().map(|s| s.to_string()));
            set
        };
        let read = |p: &PermissionInfo| READ_VERBS.contains(&verb(&p.permission));
        vec![
            BuiltInRole {
                id: "platform-admin",
                title: "Platform admin",
                description: "Operates the platform: every permission everywhere, but reading connections' secrets.",
                permissions: pick(&|p| !SERVICE_ONLY.contains(&p.permission.as_str())),
            },
            BuiltInRole {
                id: "tenant-admin",
                title: "Tenant admin",
                description: "Runs an agency: every permission grantable inside a tenant.",
                permissions: pick(&|p| p.scopes.contains(&ScopeKind::Tenant)),
            },
            BuiltInRole {
                id: "tenant-member",
                title: "Tenant member",
                description: "Works in an agency: reads everything in the tenant.",
                permissions: pick(&|p| p.scopes.contains(&ScopeKind::Tenant) && read(p)),
            },
            BuiltInRole {
                id: "client-admin",
                title: "Client admin",
                description: "Manages one client business: every permission grantable on a client.",
                permissions: pick(&|p| p.scopes.contains(&ScopeKind::Client)),
            },
            BuiltInRole {
                id: "client-viewer",
                title: "Client viewer",
                description: "Looks at one client business: reads only.",
                permissions: pick(&|p| p.scopes.contains(&ScopeKind::Client) && read(p)),
            },
            BuiltInRole {
                id: PLATFORM_SERVICE,
                title: "Platform service",
                description: "The platform's own services calling each other: hand over events and call the integration ports; nothing an operator or tenant does.",
                permissions: pick(&|p| {
                    p.permission.starts_with("ports.")
                        || p.permission == "events.consume"
                        || p.permission == "iam.connections.getCredential"
                }),
            },
        ]
    })
}

pub fn built_in(id: &str) -> Option<&'static BuiltInRole> {
    built_in_roles().iter().find(|r| r.id == id)
}

/// Whether `scope` ("" = platform, "tenants/t", "tenants/t/clients/c") contains `resource`.
pub fn scope_contains(scope: &str, resource: &str) -> bool {
    scope.is_empty()
        || resource == scope
        || resource
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The kind of a scope name, or `None` when it is not one.
pub fn scope_kind(scope: &str) -> Option<ScopeKind> {
    let parts: Vec<&str> = scope.split('/').collect();
    match parts.as_slice() {
        [""] => Some(ScopeKind::Platform),
        ["tenants", t] if !t.is_empty() => Some(ScopeKind::Tenant),
        ["tenants", t, "clients", c] if !t.is_empty() && !c.is_empty() => Some(ScopeKind::Client),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_comes_from_the_contracts() {
        let cat = catalogue();
        let flags = &cat["flags.flags.create"];
        assert_eq!(flags.scopes, BTreeSet::from([ScopeKind::Platform]));
        assert!(cat["iam.clients.get"].scopes.contains(&ScopeKind::Client));
        assert!(cat["iam.clients.create"]
            .scopes
            .contains(&ScopeKind::Tenant));
        assert!(cat.len() > 100, "{} permissions", cat.len());
    }

    #[test]
    fn built_in_roles_nest() {
        let admin = &built_in("platform-admin").unwrap().permissions;
        let tenant_admin = &built_in("tenant-admin").unwrap().permissions;
        let member = &built_in("tenant-member").unwrap().permissions;
        let client_admin = &built_in("client-admin").unwrap().permissions;
        let viewer = &built_in("client-viewer").unwrap().permissions;
        assert!(tenant_admin.is_subset(admin) && member.is_subset(tenant_admin));
        assert!(viewer.is_subset(client_admin) && client_admin.is_subset(tenant_admin));
        assert!(
            !tenant_admin.contains("flags.flags.create"),
            "platform-only permissions stay with platform admins"
        );
        assert!(!member.contains("iam.clients.delete") && member.contains("iam.clients.get"));
        assert!(viewer.contains("flags.flags.evaluate"));
    }

    #[test]
    fn scopes_contain_their_resources_only() {
        assert!(scope_contains("tenants/a", "tenants/a/clients/x"));
        assert!(scope_contains("tenants/a", "tenants/a"));
        assert!(
            !scope_contains("tenants/a", "tenants/ab/clients/x"),
            "prefix of an id is not containment"
        );
        assert!(!scope_contains("tenants/a/clients/x", "tenants/a"));
        assert!(scope_contains("", "flags/x"));
        assert_eq!(scope_kind("tenants/a/clients/b"), Some(ScopeKind::Client));
        assert_eq!(scope_kind("tenants/a/users/b"), None);
    }
}
