//! Resource names (AIP-122) of IAM, parsed once at the edge.
use maxai_kit::{resource::check_id, Error, Result};

/// `tenants/{tenant}` → the tenant id.
pub fn tenant(name: &str, field: &str) -> Result<String> {
    match name.strip_prefix("tenants/") {
        Some(id) if check_id(id, 3, 63).is_ok() => Ok(id.to_owned()),
        _ => Err(Error::invalid(
            field,
            "must be a tenant name of the form tenants/{tenant}",
        )),
    }
}

/// `tenants/{tenant}/clients/{client}` → (tenant id, client id).
pub fn client(name: &str, field: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "clients", c]
            if check_id(t, 3, 63).is_ok() && check_id(c, 1, 63).is_ok() =>
        {
            Ok((t.to_string(), c.to_string()))
        }
        _ => Err(Error::invalid(
            field,
            "must be a client name of the form tenants/{tenant}/clients/{client}",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(tenant("tenants/acme", "name").unwrap(), "acme");
        assert!(tenant("tenants/acme/clients/x", "name").is_err());
        assert!(tenant("acme", "name").is_err());
        assert_eq!(
            client("tenants/acme/clients/smile", "name").unwrap(),
            ("acme".to_owned(), "smile".to_owned())
        );
        assert!(client("tenants/acme/users/smile", "name").is_err());
    }
}
