//! The GHL adapter against the fake GHL over loopback HTTP: every RPC, error mapping, retries,
//! Retry-After, timeouts, the circuit breaker, the forced credential refresh, secrecy of the
//! token, and validation before any provider call.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::{HttpConfig, StaticCredentials};
use maxai_fakes::ghl::{FakeGhl, FakeGhlConfig, NewOpportunity, API_VERSION};
use maxai_fakes::harness::{Failure, REDACTED};
use maxai_ghl::{GhlAdapter, GhlConfig};
use maxai_kit::auth::Principal;
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::crm::v1::crm_service_server::CrmService;
use maxai_proto::maxai::ports::crm::v1::{
    AddContactNoteRequest, Contact, CreateContactRequest, CustomFieldValue, GetContactRequest,
    ListOpportunitiesRequest, OpportunityStatus, UpdateContactRequest,
};
use serde_json::json;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

const CONN: &str = "tenants/acme/clients/dental/connections/ghl-main";
const CONN_2: &str = "tenants/acme/clients/ortho/connections/ghl-main";

fn http(max_attempts: u32) -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        max_attempts,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        breaker: BreakerConfig {
            failures: 50,
            cooldown: Duration::from_secs(30),
        },
    }
}

fn credential(connection: &str, token: &str, location: &str) -> ConnectionCredential {
    let currency = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("USD".into())),
    };
    ConnectionCredential {
        connection: connection.to_owned(),
        provider: ConnectionProvider::Ghl as i32,
        access_token: token.to_owned(),
        external_account_id: location.to_owned(),
        config: Some(prost_types::Struct {
            fields: [("currency".to_owned(), currency)].into_iter().collect(),
        }),
        ..ConnectionCredential::default()
    }
}

struct Env {
    fake: FakeGhl,
    creds: Arc<StaticCredentials>,
    adapter: GhlAdapter,
    token: String,
}

async fn env_with(http: HttpConfig) -> Env {
    let fake = FakeGhl::start(FakeGhlConfig::default()).await;
    fake.add_location("loc_1", "comp_1", "Acme Dental");
    fake.add_location("loc_2", "comp_1", "Acme Ortho");
    let token = fake.issue_location_token("loc_1");
    let creds = StaticCredentials::new();
    creds.insert(credential(CONN, &token, "loc_1"));
    creds.insert(credential(
        CONN_2,
        &fake.issue_location_token("loc_2"),
        "loc_2",
    ));
    let adapter = GhlAdapter::with_http_config(fake.base_url(), API_VERSION, http, creds.clone());
    Env {
        fake,
        creds,
        adapter,
        token,
    }
}

async fn env() -> Env {
    env_with(http(3)).await
}

fn ctx(connection: &str) -> Option<CallContext> {
    Some(CallContext {
        connection: connection.to_owned(),
        idempotency_key: String::new(),
    })
}

/// A request from a verified caller of tenant `acme`.
fn req<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(Principal {
        subject: "tenants/acme/users/ann".into(),
        tenant: "acme".into(),
        token_id: "tok-1".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    request
}

fn ann() -> Contact {
    Contact {
        first_name: "Ann".into(),
        last_name: "Lee".into(),
        email: "ann@example.com".into(),
        phone: "+14155550123".into(),
        tags: vec!["Lead".into()],
        custom_fields: vec![CustomFieldValue {
            id: String::new(),
            key: "contact.reason".into(),
            value: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("cleaning".into())),
            }),
        }],
        source: "retell voice agent".into(),
        ..Contact::default()
    }
}

async fn create(
    env: &Env,
    connection: &str,
    contact: Contact,
    upsert: bool,
) -> Result<(Contact, bool), Status> {
    let response = env
        .adapter
        .create_contact(req(CreateContactRequest {
            context: ctx(connection),
            contact: Some(contact),
            upsert,
        }))
        .await?
        .into_inner();
    Ok((response.contact.expect("contact"), response.created))
}

async fn get(env: &Env, connection: &str, id: &str) -> Result<Contact, Status> {
    let response = env
        .adapter
        .get_contact(req(GetContactRequest {
            context: ctx(connection),
            contact_id: id.to_owned(),
        }))
        .await?;
    Ok(response.into_inner().contact.expect("contact"))
}

fn metadata(status: &Status) -> HashMap<String, String> {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.metadata.clone())
        .unwrap_or_default()
}

fn violations(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn create_get_update_and_note_round_trip() {
    let env = env().await;
    let (created, was_created) = create(&env, CONN, ann(), false).await.expect("create");
    assert!(was_created);
    assert_eq!(created.location_id, "loc_1");
    assert_eq!(created.name, "Ann Lee");
    assert_eq!(created.tags, ["lead"]);
    assert!(created.date_added.is_some());
    let posts = env.fake.requests_to("POST", "/contacts/");
    assert_eq!(posts.len(), 1);
    let sent = posts[0].json().expect("json body");
    assert_eq!(sent["locationId"], "loc_1");
    assert_eq!(
        sent["customFields"],
        json!([{"key": "contact.reason", "field_value": "cleaning"}])
    );
    assert_eq!(posts[0].header("version"), Some("2021-07-28"));
    assert_eq!(posts[0].header("accept"), Some("application/json"));
    assert_eq!(
        posts[0].header("authorization"),
        Some(format!("Bearer {REDACTED}").as_str())
    );

    let fetched = get(&env, CONN, &created.id).await.expect("get");
    assert_eq!(fetched.email, "ann@example.com");
    assert_eq!(fetched.phone, "+14155550123");
    assert_eq!(fetched.custom_fields.len(), 1);
    assert_eq!(fetched.custom_fields[0].id, "contact.reason");

    let updated = env
        .adapter
        .update_contact(req(UpdateContactRequest {
            context: ctx(CONN),
            contact: Some(Contact {
                id: created.id.clone(),
                first_name: "Anna".into(),
                company_name: "must not be written".into(),
                ..Contact::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["first_name".into()],
            }),
            add_tags: vec!["Booked".into()],
            remove_tags: vec!["LEAD".into()],
        }))
        .await
        .expect("update")
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(updated.first_name, "Anna");
    assert_eq!(updated.company_name, "");
    assert_eq!(updated.tags, ["booked"]);
    let puts = env
        .fake
        .requests_to("PUT", &format!("/contacts/{}", created.id));
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].json(),
        Some(json!({"firstName": "Anna", "tags": ["booked"]}))
    );

    let note = env
        .adapter
        .add_contact_note(req(AddContactNoteRequest {
            context: ctx(CONN),
            contact_id: created.id.clone(),
            body: "Booked a cleaning for Tuesday.".into(),
            user_id: String::new(),
        }))
        .await
        .expect("note")
        .into_inner()
        .note
        .expect("note");
    assert_eq!(note.body, "Booked a cleaning for Tuesday.");
    assert_eq!(note.contact_id, created.id);
    assert!(!note.id.is_empty() && note.date_added.is_some());
    assert_eq!(env.fake.notes(&created.id).len(), 1);
    let sent = env
        .fake
        .requests_to("POST", &format!("/contacts/{}/notes", created.id));
    assert_eq!(
        sent[0].json(),
        Some(json!({"body": "Booked a cleaning for Tuesday."}))
    );
}

#[tokio::test]
async fn upsert_matches_an_existing_contact_and_a_plain_duplicate_is_already_exists() {
    let env = env().await;
    let (first, created) = create(&env, CONN, ann(), true).await.expect("upsert");
    assert!(created);
    let again = Contact {
        company_name: "Acme Dental".into(),
        ..ann()
    };
    let (second, created) = create(&env, CONN, again, true).await.expect("upsert again");
    assert!(!created);
    assert_eq!(second.id, first.id);
    assert_eq!(second.company_name, "Acme Dental");
    assert_eq!(env.fake.requests_to("POST", "/contacts/upsert").len(), 2);
    assert_eq!(env.fake.contacts_of("loc_1").len(), 1);

    let err = create(&env, CONN, ann(), false)
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        metadata(&err)["provider_message"],
        "This location does not allow duplicated contacts."
    );
}

#[tokio::test]
async fn opportunities_page_through_with_tokens_and_exact_money() {
    let env = env().await;
    let base = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    for i in 0..5i64 {
        env.fake.add_opportunity(
            "loc_1",
            NewOpportunity {
                name: format!("Deal {i}"),
                pipeline_id: "pipe_1".into(),
                pipeline_stage_id: "stage_1".into(),
                status: if i == 4 { "won".into() } else { "open".into() },
                monetary_value: Some("1250.50".into()),
                created_at: Some(base + chrono::Duration::minutes(i)),
                ..NewOpportunity::default()
            },
        );
    }
    env.fake.add_opportunity(
        "loc_2",
        NewOpportunity {
            name: "Not ours".into(),
            ..NewOpportunity::default()
        },
    );

    let list = |page_token: String, status: OpportunityStatus| {
        env.adapter
            .list_opportunities(req(ListOpportunitiesRequest {
                context: ctx(CONN),
                pipeline_id: "pipe_1".into(),
                status: status as i32,
                page_size: 2,
                page_token,
                ..ListOpportunitiesRequest::default()
            }))
    };
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(token.clone(), OpportunityStatus::Unspecified)
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert_eq!(page.total_size, 5);
        names.extend(page.opportunities.iter().map(|o| o.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 5, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["Deal 0", "Deal 1", "Deal 2", "Deal 3", "Deal 4"]);
    let searches = env.fake.requests_to("GET", "/opportunities/search");
    assert_eq!(
        searches[0].query.get("location_id").map(String::as_str),
        Some("loc_1")
    );
    assert_eq!(
        searches[0].query.get("limit").map(String::as_str),
        Some("2")
    );
    assert!(
        searches[1].query.contains_key("startAfter")
            && searches[1].query.contains_key("startAfterId")
    );

    let won = list(String::new(), OpportunityStatus::Won)
        .await
        .expect("won")
        .into_inner();
    assert_eq!(won.opportunities.len(), 1);
    let deal = &won.opportunities[0];
    assert_eq!(deal.status, OpportunityStatus::Won as i32);
    let value = deal.monetary_value.as_ref().expect("value");
    assert_eq!(
        (value.currency_code.as_str(), value.units, value.nanos),
        ("USD", 1250, 500_000_000)
    );
    assert_eq!(deal.pipeline_stage_id, "stage_1");
    assert!(deal.create_time.is_some());

    // A token from one query is refused for another, before GHL hears of it.
    let first = list(String::new(), OpportunityStatus::Unspecified)
        .await
        .expect("page")
        .into_inner();
    env.fake.clear_requests();
    let err = list(first.next_page_token, OpportunityStatus::Open)
        .await
        .expect_err("other filters");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["page_token"]);
    assert!(env.fake.requests().is_empty());
}

#[tokio::test]
async fn provider_errors_map_to_grpc_codes_with_the_ghl_message() {
    let env = env().await;
    let err = get(&env, CONN, "doesnotexist").await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let meta = metadata(&err);
    assert_eq!(meta["provider"], "ghl");
    assert_eq!(meta["http_status"], "400");
    assert_eq!(meta["provider_message"], "Contact not found");

    // Passes our loose email check, fails GHL's: a 422 with an array message.
    let bad_email = Contact {
        email: "ann@example".into(),
        ..ann()
    };
    let err = create(&env, CONN, bad_email, false).await.expect_err("422");
    assert_eq!(err.code(), Code::InvalidArgument);
    let meta = metadata(&err);
    assert_eq!(meta["http_status"], "422");
    assert_eq!(meta["provider_message"], "email must be an email");
    assert_eq!(meta["provider_code"], "Unprocessable Entity");

    // A contact of another location: GHL's 403.
    let (theirs, _) = create(&env, CONN_2, ann(), false)
        .await
        .expect("create in loc_2");
    let err = get(&env, CONN, &theirs.id).await.expect_err("403");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        metadata(&err)["provider_message"],
        "The token does not have access to this location."
    );

    // An injected 400 with GHL's generic body stays INVALID_ARGUMENT.
    env.fake.fail_next(1, Failure::Status(400));
    let err = get(&env, CONN, &theirs.id).await.expect_err("400");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(metadata(&err)["provider_message"], "Bad Request");
}

#[tokio::test]
async fn rate_limit_retry_after_is_waited_out_for_safe_calls() {
    let env = env().await;
    let (contact, _) = create(&env, CONN, ann(), false).await.expect("create");
    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    get(&env, CONN, &contact.id).await.expect("get after 429");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(env.fake.requests().len(), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_is_returned_with_retry_info() {
    let env = env().await;
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(30),
        },
    );
    let started = Instant::now();
    let err = get(&env, CONN, "abc").await.expect_err("429");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay),
        Some(Duration::from_secs(30))
    );
    assert_eq!(metadata(&err)["provider_message"], "Too Many Requests");
    assert_eq!(env.fake.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_only_for_safe_calls() {
    let env = env().await;
    let (contact, _) = create(&env, CONN, ann(), false).await.expect("create");
    env.fake.clear_requests();

    env.fake.fail_next(2, Failure::Status(503));
    get(&env, CONN, &contact.id).await.expect("GET retried");
    assert_eq!(env.fake.requests().len(), 3);

    env.fake.clear_requests();
    env.fake.fail_next(1, Failure::Status(502));
    let other = Contact {
        email: "bob@example.com".into(),
        phone: String::new(),
        ..ann()
    };
    let err = create(&env, CONN, other.clone(), false)
        .await
        .expect_err("create not retried");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.requests_to("POST", "/contacts/").len(), 1);

    env.fake.clear_requests();
    env.fake.fail_next(1, Failure::Status(500));
    let err = env
        .adapter
        .add_contact_note(req(AddContactNoteRequest {
            context: ctx(CONN),
            contact_id: contact.id.clone(),
            body: "x".into(),
            user_id: String::new(),
        }))
        .await
        .expect_err("note not retried");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.requests().len(), 1);
    assert!(env.fake.notes(&contact.id).is_empty());

    env.fake.clear_requests();
    env.fake.fail_next(1, Failure::Status(503));
    let (_, created) = create(&env, CONN, other, true)
        .await
        .expect("upsert retried");
    assert!(created);
    assert_eq!(env.fake.requests_to("POST", "/contacts/upsert").len(), 2);
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let env = env_with(HttpConfig {
        timeout: Duration::from_millis(100),
        ..http(1)
    })
    .await;
    env.fake
        .fail_next(1, Failure::Slow(Duration::from_millis(400)));
    let err = get(&env, CONN, "abc").await.expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(env.fake.requests().len(), 1);
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_closes_after_the_cooldown() {
    let env = env_with(HttpConfig {
        breaker: BreakerConfig {
            failures: 2,
            cooldown: Duration::from_millis(200),
        },
        ..http(1)
    })
    .await;
    let (contact, _) = create(&env, CONN, ann(), false).await.expect("create");
    env.fake.clear_requests();
    env.fake.fail_next(2, Failure::Status(503));
    for _ in 0..2 {
        let err = get(&env, CONN, &contact.id).await.expect_err("503");
        assert_eq!(err.code(), Code::Unavailable);
    }
    assert_eq!(env.fake.requests().len(), 2);
    let err = get(&env, CONN, &contact.id)
        .await
        .expect_err("open circuit");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("circuit open"), "{}", err.message());
    assert_eq!(
        env.fake.requests().len(),
        2,
        "an open circuit sends nothing"
    );
    // Another connection has its own circuit.
    let err = get(&env, CONN_2, &contact.id)
        .await
        .expect_err("403 from GHL");
    assert_eq!(err.code(), Code::PermissionDenied);

    tokio::time::sleep(Duration::from_millis(250)).await;
    get(&env, CONN, &contact.id).await.expect("closed again");
}

#[tokio::test]
async fn a_401_forces_exactly_one_credential_refresh() {
    let env = env().await;
    let (contact, _) = create(&env, CONN, ann(), false).await.expect("create");
    // The stored token expired early; IAM's refresh yields a fresh one.
    env.fake.expire_access_tokens();
    env.creds.insert(credential(CONN, &env.token, "loc_1"));
    let fresh = env.fake.issue_location_token("loc_1");
    env.creds
        .insert_refreshed(credential(CONN, &fresh, "loc_1"));
    env.fake.clear_requests();
    let fetched = get(&env, CONN, &contact.id).await.expect("after refresh");
    assert_eq!(fetched.id, contact.id);
    assert_eq!(env.creds.refreshes(CONN), 1);
    assert_eq!(env.fake.requests().len(), 2);
    assert!(env
        .fake
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(&*format!("Bearer {REDACTED}"))));
}

#[tokio::test]
async fn a_wrong_key_is_refused_as_ghl_refuses_it_and_never_leaks() {
    let env = env().await;
    let wrong = "ghl_at_this-is-not-a-valid-token";
    env.creds.insert(credential(CONN, wrong, "loc_1"));
    env.creds.insert_refreshed(credential(
        CONN,
        "ghl_at_still-wrong-after-refresh",
        "loc_1",
    ));
    let err = get(&env, CONN, "abc").await.expect_err("401");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let meta = metadata(&err);
    assert_eq!(meta["http_status"], "401");
    assert_eq!(
        meta["provider_message"],
        "Invalid token: access token is invalid"
    );
    assert_eq!(meta["provider_code"], "Unauthorized");
    assert_eq!(env.creds.refreshes(CONN), 1, "exactly one forced refresh");
    assert_eq!(env.fake.requests().len(), 2);

    let recorded = format!("{:?}", env.fake.requests());
    let details = format!("{err:?} {:?}", err.get_error_details());
    for secret in [
        wrong,
        "ghl_at_still-wrong-after-refresh",
        env.token.as_str(),
    ] {
        assert!(!recorded.contains(secret), "token in recorded requests");
        assert!(!details.contains(secret), "token in the error");
    }
}

#[tokio::test]
async fn bad_input_is_refused_before_any_provider_call() {
    let env = env().await;
    let cases: Vec<(Status, &[&str])> = vec![
        (
            get(&env, CONN, "").await.expect_err("empty id"),
            &["contact_id"],
        ),
        (
            get(&env, CONN, "../oauth/token")
                .await
                .expect_err("path id"),
            &["contact_id"],
        ),
        (
            create(
                &env,
                CONN,
                Contact {
                    phone: "555-0123".into(),
                    email: "nope".into(),
                    ..ann()
                },
                false,
            )
            .await
            .expect_err("bad phone"),
            &["contact.email", "contact.phone"],
        ),
        (
            create(
                &env,
                CONN,
                Contact {
                    email: String::new(),
                    phone: String::new(),
                    ..ann()
                },
                true,
            )
            .await
            .expect_err("upsert without keys"),
            &["contact.email"],
        ),
        (
            create(
                &env,
                CONN,
                Contact {
                    location_id: "loc_2".into(),
                    ..ann()
                },
                false,
            )
            .await
            .expect_err("other location"),
            &["contact.location_id"],
        ),
        (
            env.adapter
                .update_contact(req(UpdateContactRequest {
                    context: ctx(CONN),
                    contact: Some(Contact {
                        id: "abc".into(),
                        phone: "12345".into(),
                        ..Contact::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["date_added".into(), "phone".into()],
                    }),
                    add_tags: vec![],
                    remove_tags: vec![],
                }))
                .await
                .expect_err("bad mask"),
            &["update_mask", "contact.phone"],
        ),
        (
            env.adapter
                .add_contact_note(req(AddContactNoteRequest {
                    context: ctx(CONN),
                    contact_id: "abc".into(),
                    body: "   ".into(),
                    user_id: String::new(),
                }))
                .await
                .expect_err("empty note"),
            &["body"],
        ),
        (
            env.adapter
                .list_opportunities(req(ListOpportunitiesRequest {
                    context: ctx(CONN),
                    page_size: 101,
                    status: 42,
                    page_token: "garbage".into(),
                    ..ListOpportunitiesRequest::default()
                }))
                .await
                .expect_err("bad list"),
            &["status", "page_size", "page_token"],
        ),
    ];
    for (status, fields) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violations(&status), fields.to_vec(), "{status:?}");
    }

    // The connection itself: malformed, another tenant's, and one without a location.
    let err = env
        .adapter
        .get_contact(req(GetContactRequest {
            context: ctx("tenants/acme/oops"),
            contact_id: "abc".into(),
        }))
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = env
        .adapter
        .get_contact(req(GetContactRequest {
            context: ctx("tenants/globex/clients/x/connections/ghl"),
            contact_id: "abc".into(),
        }))
        .await
        .expect_err("other tenant");
    assert_eq!(err.code(), Code::PermissionDenied);
    let unauthenticated = env
        .adapter
        .get_contact(Request::new(GetContactRequest {
            context: ctx(CONN),
            contact_id: "abc".into(),
        }))
        .await
        .expect_err("no caller");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let nowhere = "tenants/acme/clients/dental/connections/no-location";
    env.creds.insert(credential(nowhere, &env.token, ""));
    let err = get(&env, nowhere, "abc").await.expect_err("no location");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let unknown = get(
        &env,
        "tenants/acme/clients/dental/connections/unknown",
        "abc",
    )
    .await
    .expect_err("unknown");
    assert_eq!(unknown.code(), Code::FailedPrecondition);

    assert!(env.fake.requests().is_empty(), "{:?}", env.fake.requests());
}

#[tokio::test]
async fn the_config_builds_a_working_adapter() {
    let env = env().await;
    let config: GhlConfig = serde_json::from_value(json!({
        "base_url": env.fake.base_url(),
        "timeout_ms": 2000,
    }))
    .expect("config");
    assert_eq!(config.api_version, API_VERSION);
    let adapter = GhlAdapter::new(&config, env.creds.clone());
    let server = maxai_ghl::server(adapter);
    drop(server);
    let adapter = GhlAdapter::new(&config, env.creds.clone());
    let created = adapter
        .create_contact(req(CreateContactRequest {
            context: ctx(CONN),
            contact: Some(ann()),
            upsert: true,
        }))
        .await
        .expect("create through config")
        .into_inner();
    assert!(created.created);
    assert_eq!(
        GhlConfig::default().base_url,
        "https://services.leadconnectorhq.com"
    );
}

#[tokio::test]
async fn tag_changes_merge_onto_the_masked_list_or_the_stored_one() {
    let env = env().await;
    let (contact, _) = create(&env, CONN, ann(), false).await.expect("create");
    let update = |paths: Vec<&str>, tags: Vec<&str>, add: Vec<&str>, remove: Vec<&str>| {
        env.adapter.update_contact(req(UpdateContactRequest {
            context: ctx(CONN),
            contact: Some(Contact {
                id: contact.id.clone(),
                tags: tags.into_iter().map(String::from).collect(),
                ..Contact::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.into_iter().map(String::from).collect(),
            }),
            add_tags: add.into_iter().map(String::from).collect(),
            remove_tags: remove.into_iter().map(String::from).collect(),
        }))
    };
    let path = format!("/contacts/{}", contact.id);

    // With "tags" masked the given list is the base: nothing is read first.
    env.fake.clear_requests();
    let updated = update(vec!["tags"], vec!["A", "B"], vec!["c"], vec!["b"])
        .await
        .expect("update")
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(updated.tags, ["a", "c"]);
    assert!(env.fake.requests_to("GET", &path).is_empty());
    assert_eq!(
        env.fake.requests_to("PUT", &path)[0].json(),
        Some(json!({"tags": ["a", "c"]}))
    );

    // Without it, the stored tags are read and merged.
    env.fake.clear_requests();
    let updated = update(vec![], vec![], vec!["vip"], vec![])
        .await
        .expect("add")
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(updated.tags, ["a", "c", "vip"]);
    assert_eq!(env.fake.requests_to("GET", &path).len(), 1);

    // Nothing to write: the contact is only read.
    env.fake.clear_requests();
    let same = update(vec![], vec![], vec![], vec![])
        .await
        .expect("no-op")
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(same.tags, ["a", "c", "vip"]);
    assert!(env.fake.requests_to("PUT", &path).is_empty());
    assert_eq!(env.fake.requests().len(), 1);
}
