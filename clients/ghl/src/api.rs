//! The CRM port over GHL: check the connection, validate the request (bad input never reaches
//! GHL), resolve the connection's location, call GHL, convert the answer.
use maxai_adapter::credentials::require_provider;
use maxai_adapter::{validate, Connection, ProviderResponse, Retry};
use maxai_kit::error::Violations;
use maxai_kit::{Error, ErrorKind};
use maxai_proto::maxai::iam::v1::ConnectionProvider;
use maxai_proto::maxai::ports::crm::v1::crm_service_server::CrmService;
use maxai_proto::maxai::ports::crm::v1::{
    AddContactNoteRequest, AddContactNoteResponse, Contact, CreateContactRequest,
    CreateContactResponse, CustomFieldValue, GetContactRequest, GetContactResponse,
    ListOpportunitiesRequest, ListOpportunitiesResponse, OpportunityStatus, UpdateContactRequest,
    UpdateContactResponse,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::convert::{self, Cursor};
use crate::error::refine;
use crate::GhlAdapter;

const DEFAULT_PAGE_SIZE: i32 = 20;
const MAX_PAGE_SIZE: i32 = 100;
/// GHL notes are free text; a call summary is far below this.
const MAX_NOTE_CHARS: usize = 50_000;

/// What a call needs from the connection's credential.
struct Account {
    location_id: String,
    /// The location's currency, when the connection's config names it.
    currency: String,
}

impl GhlAdapter {
    /// The connection's GHL location, from its credential.
    async fn account(&self, connection: &Connection) -> Result<Account, Status> {
        let credential = self
            .creds
            .credential(&connection.name, false)
            .await
            .map_err(|status| match ErrorKind::from_code(status.code()) {
                ErrorKind::NotFound | ErrorKind::Unauthenticated => Status::from(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("no usable credential for {}", connection.name),
                )),
                _ => status,
            })?;
        require_provider(&credential, &[ConnectionProvider::Ghl])?;
        if credential.external_account_id.is_empty() {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "the GHL connection has no location id; reconnect it with a location token",
            )
            .into());
        }
        let currency = credential
            .config
            .as_ref()
            .and_then(|c| c.fields.get("currency"))
            .and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Account {
            location_id: credential.external_account_id,
            currency,
        })
    }

    async fn send(
        &self,
        connection: &Connection,
        retry: Retry,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<ProviderResponse, Status> {
        let url = self.http.url(path);
        self.http
            .call(
                &*self.creds,
                &connection.name,
                retry,
                |client, credential| {
                    let mut request = client
                        .request(method.clone(), &url)
                        .bearer_auth(&credential.access_token)
                        .header("Version", &self.api_version)
                        .header(reqwest::header::ACCEPT, "application/json")
                        .query(query);
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    request
                },
            )
            .await
            .map_err(|e| Status::from(refine(e)))
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        connection: &Connection,
        retry: Retry,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, Status> {
        let response = self
            .send(connection, retry, method, path, query, body)
            .await?;
        response.json::<T>().map_err(|e| Status::from(refine(e)))
    }

    async fn fetch_contact(
        &self,
        connection: &Connection,
        contact_id: &str,
    ) -> Result<Contact, Status> {
        let envelope: convert::ContactEnvelope = self
            .send_json(
                connection,
                Retry::Safe,
                Method::GET,
                &format!("/contacts/{contact_id}"),
                &[],
                None,
            )
            .await?;
        Ok(convert::contact_from_ghl(envelope.contact))
    }
}

/// GHL ids are short alphanumerics; anything else would change the request path.
fn provider_id(field: &str, value: &str, v: &mut Violations) {
    if value.is_empty() {
        v.add(field, "is required");
    } else if value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        v.add(field, "must be a GHL id (letters, digits, '_' or '-')");
    }
}

/// A loose shape check only: GHL is the authority on what it accepts as an email.
fn plausible_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Checks the contact fields that will be written; `only` limits the check to masked fields.
fn check_contact(prefix: &str, contact: &Contact, only: Option<&[String]>, v: &mut Violations) {
    let written = |field: &str| only.is_none_or(|paths| paths.iter().any(|p| p == field));
    if written("email") && !contact.email.is_empty() && !plausible_email(&contact.email) {
        v.add(format!("{prefix}.email"), "must be an email address");
    }
    if written("phone") && !contact.phone.is_empty() && !validate::is_e164(&contact.phone) {
        v.add(
            format!("{prefix}.phone"),
            "must be an E.164 number such as +14155550123",
        );
    }
    if written("custom_fields") {
        for (i, CustomFieldValue { id, key, value: _ }) in contact.custom_fields.iter().enumerate()
        {
            if id.is_empty() && key.is_empty() {
                v.add(
                    format!("{prefix}.custom_fields[{i}]"),
                    "needs an id or a key",
                );
            }
        }
    }
    if written("tags") && contact.tags.iter().any(|t| t.trim().is_empty()) {
        v.add(format!("{prefix}.tags"), "must not contain empty tags");
    }
}

/// `location_id` may be empty (the connection's) or the connection's own.
fn check_location(field: &str, given: &str, account: &Account) -> Result<(), Status> {
    if given.is_empty() || given == account.location_id {
        return Ok(());
    }
    let mut v = Violations::new();
    v.add(field, "must be empty or the connection's location");
    v.into_result()?;
    Ok(())
}

#[tonic::async_trait]
impl CrmService for GhlAdapter {
    async fn get_contact(
        &self,
        request: Request<GetContactRequest>,
    ) -> Result<Response<GetContactResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let GetContactRequest {
            context: _,
            contact_id,
        } = request.into_inner();
        let mut v = Violations::new();
        provider_id("contact_id", &contact_id, &mut v);
        v.into_result()?;
        self.account(&connection).await?;
        let contact = self.fetch_contact(&connection, &contact_id).await?;
        Ok(Response::new(GetContactResponse {
            contact: Some(contact),
        }))
    }

    async fn create_contact(
        &self,
        request: Request<CreateContactRequest>,
    ) -> Result<Response<CreateContactResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let CreateContactRequest {
            context: _,
            contact,
            upsert,
        } = request.into_inner();
        let mut v = Violations::new();
        let contact = contact.unwrap_or_default();
        check_contact("contact", &contact, None, &mut v);
        if upsert && contact.email.is_empty() && contact.phone.is_empty() {
            v.add(
                "contact.email",
                "an upsert needs an email or a phone to match on",
            );
        }
        v.into_result()?;
        let account = self.account(&connection).await?;
        check_location("contact.location_id", &contact.location_id, &account)?;
        let body = convert::create_body(&contact, &account.location_id);
        let (contact, created) = if upsert {
            // An upsert converges on one contact, so repeating it is harmless.
            let envelope: convert::UpsertEnvelope = self
                .send_json(
                    &connection,
                    Retry::Safe,
                    Method::POST,
                    "/contacts/upsert",
                    &[],
                    Some(&body),
                )
                .await?;
            (envelope.contact, envelope.created)
        } else {
            let envelope: convert::ContactEnvelope = self
                .send_json(
                    &connection,
                    Retry::Never,
                    Method::POST,
                    "/contacts/",
                    &[],
                    Some(&body),
                )
                .await?;
            (envelope.contact, true)
        };
        Ok(Response::new(CreateContactResponse {
            contact: Some(convert::contact_from_ghl(contact)),
            created,
        }))
    }

    async fn update_contact(
        &self,
        request: Request<UpdateContactRequest>,
    ) -> Result<Response<UpdateContactResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let UpdateContactRequest {
            context: _,
            contact,
            update_mask,
            add_tags,
            remove_tags,
        } = request.into_inner();
        let contact = contact.unwrap_or_default();
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        provider_id("contact.id", &contact.id, &mut v);
        for path in &paths {
            if !convert::WRITABLE_FIELDS
                .iter()
                .any(|(port, _)| port == path)
            {
                v.add(
                    "update_mask",
                    format!("{path:?} is not a writable contact field"),
                );
            }
        }
        check_contact("contact", &contact, Some(&paths), &mut v);
        if add_tags
            .iter()
            .chain(&remove_tags)
            .any(|t| t.trim().is_empty())
        {
            v.add("add_tags", "tags must not be empty");
        }
        v.into_result()?;
        let account = self.account(&connection).await?;
        check_location("contact.location_id", &contact.location_id, &account)?;
        let mut body = convert::update_body(&contact, &paths);
        if !add_tags.is_empty() || !remove_tags.is_empty() {
            let base = if paths.iter().any(|p| p == "tags") {
                contact.tags.clone()
            } else {
                self.fetch_contact(&connection, &contact.id).await?.tags
            };
            let merged = convert::merge_tags(&base, &add_tags, &remove_tags);
            body.insert("tags".into(), serde_json::json!(merged));
        }
        if body.is_empty() {
            let current = self.fetch_contact(&connection, &contact.id).await?;
            return Ok(Response::new(UpdateContactResponse {
                contact: Some(current),
            }));
        }
        // The body states final field values (the tag list included), so a repeat is harmless.
        let envelope: convert::ContactEnvelope = self
            .send_json(
                &connection,
                Retry::Safe,
                Method::PUT,
                &format!("/contacts/{}", contact.id),
                &[],
                Some(&Value::Object(body)),
            )
            .await?;
        Ok(Response::new(UpdateContactResponse {
            contact: Some(convert::contact_from_ghl(envelope.contact)),
        }))
    }

    async fn add_contact_note(
        &self,
        request: Request<AddContactNoteRequest>,
    ) -> Result<Response<AddContactNoteResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let AddContactNoteRequest {
            context: _,
            contact_id,
            body,
            user_id,
        } = request.into_inner();
        let mut v = Violations::new();
        provider_id("contact_id", &contact_id, &mut v);
        validate::required("body", &body, &mut v);
        v.check(
            body.chars().count() <= MAX_NOTE_CHARS,
            "body",
            format!("must be at most {MAX_NOTE_CHARS} characters"),
        );
        if !user_id.is_empty() {
            provider_id("user_id", &user_id, &mut v);
        }
        v.into_result()?;
        self.account(&connection).await?;
        let mut note = serde_json::Map::new();
        note.insert("body".into(), serde_json::json!(body));
        if !user_id.is_empty() {
            note.insert("userId".into(), serde_json::json!(user_id));
        }
        let envelope: convert::NoteEnvelope = self
            .send_json(
                &connection,
                Retry::Never,
                Method::POST,
                &format!("/contacts/{contact_id}/notes"),
                &[],
                Some(&Value::Object(note)),
            )
            .await?;
        Ok(Response::new(AddContactNoteResponse {
            note: Some(convert::note_from_ghl(envelope.note, &contact_id)),
        }))
    }

    async fn list_opportunities(
        &self,
        request: Request<ListOpportunitiesRequest>,
    ) -> Result<Response<ListOpportunitiesResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let ListOpportunitiesRequest {
            context: _,
            pipeline_id,
            pipeline_stage_id,
            status,
            contact_id,
            assigned_to,
            query,
            page_size,
            page_token,
        } = request.into_inner();
        let mut v = Violations::new();
        for (field, value) in [
            ("pipeline_id", &pipeline_id),
            ("pipeline_stage_id", &pipeline_stage_id),
            ("contact_id", &contact_id),
            ("assigned_to", &assigned_to),
        ] {
            if !value.is_empty() {
                provider_id(field, value, &mut v);
            }
        }
        let status = OpportunityStatus::try_from(status).ok();
        if status.is_none() {
            v.add("status", "is not a known opportunity status");
        }
        let status = status.and_then(convert::status_to_ghl);
        if !(0..=MAX_PAGE_SIZE).contains(&page_size) {
            v.add(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            );
        }
        let limit = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        // The cursor is bound to the filters, so a token is never replayed against another
        // query (AIP-158); the location is part of it too.
        let filters = |location: &str| {
            convert::fingerprint(&[
                location,
                &pipeline_id,
                &pipeline_stage_id,
                status.unwrap_or_default(),
                &contact_id,
                &assigned_to,
                &query,
            ])
        };
        let cursor = if page_token.is_empty() {
            None
        } else {
            let cursor = Cursor::decode(&page_token);
            if cursor.is_none() {
                v.add("page_token", "is not a token this call returned");
            }
            cursor
        };
        v.into_result()?;
        let account = self.account(&connection).await?;
        let fingerprint = filters(&account.location_id);
        if cursor.as_ref().is_some_and(|c| c.filters != fingerprint) {
            let mut v = Violations::new();
            v.add("page_token", "was issued for other filters");
            v.into_result()?;
        }
        let mut params: Vec<(&str, String)> = vec![
            ("location_id", account.location_id.clone()),
            ("limit", limit.to_string()),
        ];
        for (name, value) in [
            ("pipeline_id", &pipeline_id),
            ("pipeline_stage_id", &pipeline_stage_id),
            ("contact_id", &contact_id),
            ("assigned_to", &assigned_to),
            ("q", &query),
        ] {
            if !value.is_empty() {
                params.push((name, value.clone()));
            }
        }
        if let Some(status) = status {
            params.push(("status", status.to_owned()));
        }
        if let Some(cursor) = &cursor {
            params.push(("startAfter", cursor.start_after.to_string()));
            params.push(("startAfterId", cursor.start_after_id.clone()));
        }
        let page: convert::SearchResponse = self
            .send_json(
                &connection,
                Retry::Safe,
                Method::GET,
                "/opportunities/search",
                &params,
                None,
            )
            .await?;
        let next_page_token = Cursor::next(&page.meta, fingerprint)
            .map(|c| c.encode())
            .unwrap_or_default();
        let total_size = page
            .meta
            .total
            .and_then(|t| i32::try_from(t).ok())
            .unwrap_or_default();
        let opportunities = page
            .opportunities
            .into_iter()
            .map(|o| convert::opportunity_from_ghl(o, &account.currency))
            .collect();
        Ok(Response::new(ListOpportunitiesResponse {
            opportunities,
            next_page_token,
            total_size,
        }))
    }
}
