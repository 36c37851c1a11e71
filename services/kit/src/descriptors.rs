//! The contracts as data: the descriptor pool decoded once from `maxai_proto::FILE_DESCRIPTOR_SET`,
//! and the two method options everything reads from it (`google.api.http`, `maxai.api.v1.auth`).
use std::sync::OnceLock;

use maxai_proto::{google::api::HttpRule, maxai::api::v1::AuthRule};
use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

static POOL: OnceLock<DescriptorPool> = OnceLock::new();

/// Every contract. Decoding cannot fail for the set this crate was built with.
pub fn pool() -> &'static DescriptorPool {
    POOL.get_or_init(|| {
        DescriptorPool::decode(maxai_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set built by build.rs decodes")
    })
}

fn extension<T: prost::Message + Default>(method: &MethodDescriptor, name: &str) -> Option<T> {
    let ext = method.parent_pool().get_extension_by_name(name)?;
    let options = method.options();
    if !options.has_extension(&ext) {
        return None;
    }
    match options.get_extension(&ext).as_ref() {
        Value::Message(m) => m.transcode_to::<T>().ok(),
        _ => None,
    }
}

/// The method's `google.api.http` rule, when it has one.
pub fn http_rule(method: &MethodDescriptor) -> Option<HttpRule> {
    extension(method, "google.api.http")
}

/// The method's `(maxai.api.v1.auth)` rule, when it has one.
pub fn auth_rule(method: &MethodDescriptor) -> Option<AuthRule> {
    extension(method, "maxai.api.v1.auth")
}

/// The response field the REST gateway redirects to (`(maxai.api.v1.http_redirect)`).
pub fn http_redirect(method: &MethodDescriptor) -> Option<String> {
    let ext = method
        .parent_pool()
        .get_extension_by_name("maxai.api.v1.http_redirect")?;
    let options = method.options();
    if !options.has_extension(&ext) {
        return None;
    }
    match options.get_extension(&ext).as_ref() {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The leading comment of the element at `path` in `file` (from the source info the build
/// keeps), trimmed; `None` when there is none.
pub fn comment(file: &prost_reflect::FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let text = info
        .location
        .iter()
        .find(|l| l.path == path)?
        .leading_comments
        .as_deref()?;
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!joined.is_empty()).then_some(joined)
}

/// Every method of the named service.
pub fn methods(service: &str) -> Vec<MethodDescriptor> {
    pool()
        .get_service_by_name(service)
        .map(|s| s.methods().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_http_and_auth_options_from_the_contracts() {
        let get = pool()
            .get_service_by_name("maxai.flags.v1.FeatureFlagsService")
            .and_then(|s| s.methods().find(|m| m.name() == "GetFlag"))
            .unwrap();
        let http = http_rule(&get).unwrap();
        assert!(
            matches!(http.pattern, Some(maxai_proto::google::api::http_rule::Pattern::Get(ref p)) if p == "/v1/{name=flags/*}")
        );
        assert_eq!(http.response_body, "flag");
        let auth = auth_rule(&get).unwrap();
        assert_eq!(auth.permission, "flags.flags.get");
        assert_eq!(auth.resource_field, "name");
    }

    #[test]
    fn comments_come_with_the_descriptors() {
        let get = pool()
            .get_service_by_name("maxai.flags.v1.FeatureFlagsService")
            .and_then(|s| s.methods().find(|m| m.name() == "GetFlag"))
            .unwrap();
        let text = comment(&get.parent_file(), get.path()).unwrap();
        assert!(text.starts_with("Gets a flag"), "{text}");
    }

    #[test]
    fn every_rpc_of_every_service_declares_auth() {
        for service in pool().services() {
            for method in service.methods() {
                let auth = auth_rule(&method);
                assert!(
                    auth.is_some(),
                    "{} has no (maxai.api.v1.auth)",
                    method.full_name()
                );
                let auth = auth.unwrap();
                assert!(
                    auth.public || !auth.permission.is_empty(),
                    "{} names no permission",
                    method.full_name()
                );
            }
        }
    }
}
