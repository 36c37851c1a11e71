//! The integration ports as `maxai up` serves them, end to end over real sockets: a client's
//! accounts are connected over REST (GHL through OAuth against the sandbox's fake GHL, Twilio
//! with an API key), then the ports are called over gRPC with the platform's service identity,
//! each adapter fetching the credential from IAM and calling the fake provider over HTTP.
mod common;

use common::up_sandbox;
use maxai_platform::sandbox;
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::ports::crm::v1::{
    crm_service_client::CrmServiceClient, Contact, CreateContactRequest,
};
use maxai_proto::maxai::ports::messaging::v1::{
    messaging_service_client::MessagingServiceClient, SendSmsRequest,
};
use maxai_testkit::{authed, backends};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tonic::Code;

const MESH: &str = "tenants/platform/serviceAccounts/mesh";

/// Every log line of this test process, to look for secrets in.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    fn capture() -> Logs {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(logs.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("one subscriber per test process");
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}
const CLIENT: &str = "tenants/acme/clients/dental";

fn sms(connection: &str, key: &str) -> SendSmsRequest {
    SendSmsRequest {
        context: Some(CallContext {
            connection: connection.into(),
            idempotency_key: key.into(),
        }),
        from_number: sandbox::TWILIO_NUMBER.into(),
        to_number: "+14155550123".into(),
        body: "Thanks for calling! Book here: https://example.test/book".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn connected_accounts_drive_the_ports_against_the_sandbox() {
    let logs = Logs::capture();
    for backend in backends().await {
        let (up, sandbox) = up_sandbox(&backend).await;
        up.admin(
            Method::POST,
            "/v1/tenants?tenantId=acme",
            json!({"displayName": "Acme Agency", "contactEmail": "ops@acme.example"}),
        )
        .await;
        up.admin(
            Method::POST,
            "/v1/tenants?tenantId=rival",
            json!({"displayName": "Rival", "contactEmail": "ops@rival.example"}),
        )
        .await;
        up.admin(
            Method::POST,
            "/v1/tenants/acme/clients?clientId=dental",
            json!({"displayName": "Dental Co", "timeZone": "America/Chicago"}),
        )
        .await;

        // Twilio with an API key, over REST; the answer never carries the key.
        let twilio = up
            .admin(
                Method::POST,
                &format!("/v1/{CLIENT}/connections"),
                json!({
                    "connectionId": "twilio",
                    "connection": {"provider": "CONNECTION_PROVIDER_TWILIO", "displayName": "Front desk"},
                    "credential": {"apiKey": sandbox::TWILIO_AUTH_TOKEN, "accountId": sandbox::TWILIO_ACCOUNT_SID},
                }),
            )
            .await;
        assert_eq!(twilio["state"], "CONNECTION_STATE_ACTIVE", "{twilio}");
        assert!(!twilio.to_string().contains(sandbox::TWILIO_AUTH_TOKEN));
        let twilio_name = format!("{CLIENT}/connections/twilio");

        // The port, as the orchestrator calls it: one SMS however often the step is retried.
        let mut messaging = MessagingServiceClient::new(authed(&up.grpc, &up.token(MESH)).await);
        let sent = messaging
            .send_sms(sms(&twilio_name, "exec-1/step-sms"))
            .await
            .expect("send")
            .into_inner();
        assert!(sent.sid.starts_with("SM"), "{}", sent.sid);
        let again = messaging
            .send_sms(sms(&twilio_name, "exec-1/step-sms"))
            .await
            .expect("repeat")
            .into_inner();
        assert_eq!(again.sid, sent.sid);
        assert_eq!(
            sandbox.twilio.messages().len(),
            1,
            "exactly one SMS at Twilio"
        );

        // A tenant admin of another tenant cannot use acme's connection; nothing is sent.
        let rival = up.token("tenants/rival/users/rob");
        maxai_iam::ensure_grant(
            &backend.storage,
            "tenants/rival/users/rob",
            "roles/tenant-admin",
            None,
        )
        .await
        .expect("grant");
        let err = MessagingServiceClient::new(authed(&up.grpc, &rival).await)
            .send_sms(sms(&twilio_name, "rival-1"))
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::NotFound),
            "{err:?}"
        );
        assert_eq!(sandbox.twilio.messages().len(), 1);

        // GHL through OAuth: start over REST, the browser goes to the fake GHL and back to the
        // public callback route.
        let started = up
            .admin(
                Method::POST,
                &format!("/v1/{CLIENT}/connections:startOAuth"),
                json!({"provider": "CONNECTION_PROVIDER_GHL", "connectionId": "crm"}),
            )
            .await;
        let authorize = started["authorizationUrl"]
            .as_str()
            .expect("url")
            .to_owned();
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let back = browser.get(&authorize).send().await.expect("authorize");
        assert_eq!(back.status(), StatusCode::FOUND);
        let location = url::Url::parse(back.headers()["location"].to_str().expect("location"))
            .expect("location url");
        let query = location.query().unwrap_or_default().to_owned();
        let (status, done) = up
            .call(
                Method::GET,
                &format!("/v1/connections/oauth/callback?{query}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(
            done["connection"]["state"], "CONNECTION_STATE_ACTIVE",
            "{done}"
        );
        assert_eq!(
            done["connection"]["externalAccountId"],
            sandbox::GHL_LOCATION
        );
        // The state is single-use.
        let (status, _) = up
            .call(
                Method::GET,
                &format!("/v1/connections/oauth/callback?{query}"),
                None,
                None,
            )
            .await;
        assert!(status.is_client_error(), "{status}");

        let mut crm = CrmServiceClient::new(authed(&up.grpc, &up.token(MESH)).await);
        let created = crm
            .create_contact(CreateContactRequest {
                context: Some(CallContext {
                    connection: format!("{CLIENT}/connections/crm"),
                    idempotency_key: "exec-1/step-contact".into(),
                }),
                contact: Some(Contact {
                    first_name: "Pat".into(),
                    last_name: "Lee".into(),
                    phone: "+14155550123".into(),
                    email: "pat@example.test".into(),
                    ..Default::default()
                }),
                upsert: true,
            })
            .await
            .expect("create contact")
            .into_inner();
        let contact = created.contact.expect("contact");
        assert!(!contact.id.is_empty());
        let stored = sandbox.ghl.contacts_of(sandbox::GHL_LOCATION);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0]["email"], "pat@example.test");

        // What was logged on the way names the connections but never their secrets.
        let text = logs.text();
        assert!(text.contains("connection authorized"), "logs were captured");
        assert!(
            !text.contains(sandbox::TWILIO_AUTH_TOKEN),
            "the Twilio key is not logged"
        );
        let tokens = sandbox.ghl.issued_access_tokens();
        assert!(!tokens.is_empty());
        for token in tokens {
            assert!(!text.contains(&token), "a GHL access token is not logged");
        }
    }
}
