//! The connection a port call acts for. The guard has already checked that the caller holds
//! `ports.<port>.call` on `context.connection`; this parses the name for the adapter and checks
//! the tenant again, so an adapter never acts for another tenant's connection even if a
//! permission were granted too widely.
use maxai_kit::auth::Principal;
use maxai_kit::error::Violations;
use maxai_kit::{Error, ErrorKind};
use maxai_proto::maxai::common::v1::CallContext;
use tonic::Status;

/// The tenant of the platform's own identities, which act for every tenant.
const PLATFORM_TENANT: &str = "platform";

/// `tenants/{tenant}/clients/{client}/connections/{id}`, with the call's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub name: String,
    pub tenant: String,
    pub client: String,
    pub id: String,
    /// Empty when the caller gave none.
    pub idempotency_key: String,
}

impl Connection {
    /// Parses a connection name; a malformed one is a field violation on `context.connection`.
    pub fn parse(name: &str) -> Result<Connection, Status> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["tenants", t, "clients", c, "connections", id]
                if [t, c, id].iter().all(|s| valid_id(s)) =>
            {
                Ok(Connection {
                    name: name.to_owned(),
                    tenant: (*t).to_owned(),
                    client: (*c).to_owned(),
                    id: (*id).to_owned(),
                    idempotency_key: String::new(),
                })
            }
            _ => Err(invalid(
                "context.connection",
                "must be tenants/{tenant}/clients/{client}/connections/{connection}",
            )),
        }
    }

    /// The connection of a port request, checked against its verified caller.
    pub fn of<T>(
        request: &tonic::Request<T>,
        context: Option<&CallContext>,
    ) -> Result<Connection, Status> {
        let context = context.ok_or_else(|| invalid("context", "is required"))?;
        let mut connection = Connection::parse(&context.connection)?;
        connection.idempotency_key = context.idempotency_key.clone();
        let caller = Principal::of(request)?;
        if caller.tenant != connection.tenant && caller.tenant != PLATFORM_TENANT {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "the connection is not in the caller's tenant",
            )
            .into());
        }
        Ok(connection)
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn invalid(field: &str, description: &str) -> Status {
    let mut v = Violations::new();
    v.add(field, description);
    match v.into_result() {
        Err(e) => e.into(),
        Ok(()) => Status::invalid_argument(description.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_from(tenant: &str) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        r.extensions_mut().insert(Principal {
            subject: format!("tenants/{tenant}/users/u"),
            tenant: tenant.to_owned(),
            token_id: "t".into(),
            expires_at: i64::MAX,
            api_key: String::new(),
        });
        r
    }

    fn ctx(name: &str) -> CallContext {
        CallContext {
            connection: name.to_owned(),
            idempotency_key: "exec-1/step-2".into(),
        }
    }

    #[test]
    fn parses_and_keeps_the_idempotency_key() {
        let c = Connection::of(
            &request_from("acme"),
            Some(&ctx("tenants/acme/clients/dental/connections/ghl-main")),
        )
        .unwrap();
        assert_eq!(c.tenant, "acme");
        assert_eq!(c.client, "dental");
        assert_eq!(c.id, "ghl-main");
        assert_eq!(c.idempotency_key, "exec-1/step-2");
    }

    #[test]
    fn malformed_or_missing_is_a_field_violation() {
        for bad in [
            "",
            "tenants/acme",
            "tenants/acme/clients/x/connections/",
            "tenants/A/clients/x/connections/y",
        ] {
            let err = Connection::of(&request_from("acme"), Some(&ctx(bad))).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let err = Connection::of(&request_from("acme"), None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn another_tenants_connection_is_refused_but_the_platform_acts_for_all() {
        let name = "tenants/other/clients/x/connections/y";
        let err = Connection::of(&request_from("acme"), Some(&ctx(name))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(Connection::of(&request_from("platform"), Some(&ctx(name))).is_ok());
        let anonymous = tonic::Request::new(());
        let err = Connection::of(&anonymous, Some(&ctx(name))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
