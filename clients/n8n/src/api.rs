//! The tonic service: validate → convert → provider call → map.
use std::time::Duration;

use maxai_adapter::credentials::require_provider;
use maxai_adapter::{Connection, ProviderError, ProviderResponse, Retry};
use maxai_kit::error::Violations;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::workflow::v1::workflow_service_server::WorkflowService;
use maxai_proto::maxai::ports::workflow::v1::{
    CreateWorkflowRequest, CreateWorkflowResponse, ExecuteWorkflowRequest, ExecuteWorkflowResponse,
    GetExecutionStatusRequest, GetExecutionStatusResponse, UpdateWorkflowRequest,
    UpdateWorkflowResponse, Workflow,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::convert::{self, ExecutionJson, ExecutionList, WorkflowJson, WritableWorkflow};
use crate::N8nAdapter;

const MASKABLE: &[&str] = &["name", "nodes", "connections", "settings", "active"];

/// Which fields an update touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mask {
    name: bool,
    nodes: bool,
    connections: bool,
    settings: bool,
    active: bool,
}

impl Mask {
    fn parse(paths: &[String], v: &mut Violations) -> Mask {
        if paths.is_empty() {
            return Mask {
                name: true,
                nodes: true,
                connections: true,
                settings: true,
                active: true,
            };
        }
        for p in paths {
            if !MASKABLE.contains(&p.as_str()) {
                v.add(
                    "update_mask",
                    format!("{p} is not one of name, nodes, connections, settings, active"),
                );
            }
        }
        let has = |f: &str| paths.iter().any(|p| p == f);
        Mask {
            name: has("name"),
            nodes: has("nodes"),
            connections: has("connections"),
            settings: has("settings"),
            active: has("active"),
        }
    }

    fn touches_definition(self) -> bool {
        self.name || self.nodes || self.connections || self.settings
    }
}

fn check_nodes(w: &Workflow, v: &mut Violations) {
    if w.nodes.is_empty() {
        v.add("workflow.nodes", "needs at least one node");
    }
    for (i, node) in w.nodes.iter().enumerate() {
        for field in ["name", "type"] {
            let ok = node
                .fields
                .get(field)
                .and_then(|f| f.kind.as_ref())
                .is_some_and(
                    |k| matches!(k, prost_types::value::Kind::StringValue(s) if !s.is_empty()),
                );
            if !ok {
                v.add(
                    format!("workflow.nodes[{i}]"),
                    format!("needs a \"{field}\" string"),
                );
            }
        }
    }
}

/// A webhook path is appended to the instance's webhook URL, so it must stay a path.
fn check_webhook_path(path: &str, v: &mut Violations) {
    let path = path.trim_matches('/');
    if path.is_empty() {
        v.add("webhook_path", "is required");
    } else if path.contains("://")
        || path
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty())
        || path
            .chars()
            .any(|c| c == '?' || c == '#' || c.is_whitespace() || c.is_control())
    {
        v.add(
            "webhook_path",
            "must be the Webhook node's path, e.g. \"booking/follow-up\"",
        );
    }
}

fn precondition(message: impl Into<String>) -> Status {
    maxai_kit::Error::new(ErrorKind::PreconditionFailed, message).into()
}

/// The instance URL of a credential, without a trailing slash.
fn instance(credential: &ConnectionCredential) -> String {
    credential.base_url.trim_end_matches('/').to_owned()
}

impl N8nAdapter {
    /// Refuses another provider's connection, or one without an instance URL, before sending.
    async fn check_connection(&self, connection: &Connection) -> Result<(), Status> {
        let credential = self
            .creds
            .credential(&connection.name, false)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound | tonic::Code::Unauthenticated => {
                    precondition(s.message().to_owned())
                }
                _ => s,
            })?;
        require_provider(&credential, &[ConnectionProvider::N8n])?;
        let base = instance(&credential);
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(precondition(format!(
                "connection {} has no n8n instance URL (base_url)",
                connection.name
            )));
        }
        Ok(())
    }

    /// One REST API call; `path` is under `{instance}/api/v1`.
    async fn api(
        &self,
        connection: &Connection,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<ProviderResponse, ProviderError> {
        self.http
            .call(
                &*self.creds,
                &connection.name,
                retry,
                |client, credential| {
                    let url = format!("{}/api/v1{path}", instance(credential));
                    let mut request = client
                        .request(method.clone(), url)
                        .header("X-N8N-API-KEY", &credential.api_key)
                        .header(reqwest::header::ACCEPT, "application/json");
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    request
                },
            )
            .await
    }

    async fn get_workflow(
        &self,
        connection: &Connection,
        id: &str,
    ) -> Result<WorkflowJson, ProviderError> {
        let response = self
            .api(
                connection,
                reqwest::Method::GET,
                &format!("/workflows/{id}"),
                None,
                Retry::Safe,
            )
            .await?;
        convert::parse_workflow(&response.body)
    }

    /// Activation is idempotent in n8n (activating an active workflow changes nothing).
    async fn set_active(
        &self,
        connection: &Connection,
        id: &str,
        active: bool,
    ) -> Result<WorkflowJson, ProviderError> {
        let verb = if active { "activate" } else { "deactivate" };
        let response = self
            .api(
                connection,
                reqwest::Method::POST,
                &format!("/workflows/{id}/{verb}"),
                None,
                Retry::Safe,
            )
            .await?;
        convert::parse_workflow(&response.body)
    }

    /// The execution whose data holds `correlation`, among the most recent ones.
    async fn find_execution(&self, connection: &Connection, correlation: &str) -> Option<String> {
        let path = format!(
            "/executions?includeData=true&limit={}",
            self.config.lookup_page_size.clamp(1, 250)
        );
        for attempt in 0..self.config.lookup_attempts {
            if attempt > 0 {
                tokio::time::sleep(self.config.lookup_interval()).await;
            }
            let listed = match self
                .api(connection, reqwest::Method::GET, &path, None, Retry::Safe)
                .await
                .and_then(|r| r.json::<ExecutionList>())
            {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "n8n execution lookup failed");
                    return None;
                }
            };
            let ExecutionList {
                data,
                next_cursor: _,
            } = listed;
            let found = data.iter().find(|e| {
                e.data
                    .as_ref()
                    .is_some_and(|d| convert::holds_string(d, correlation))
            });
            if let Some(e) = found {
                return Some(convert::id_text(&e.id));
            }
        }
        tracing::info!(
            correlation,
            "no n8n execution carries the correlation id yet"
        );
        None
    }
}

#[tonic::async_trait]
impl WorkflowService for N8nAdapter {
    async fn create_workflow(
        &self,
        request: Request<CreateWorkflowRequest>,
    ) -> Result<Response<CreateWorkflowResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let CreateWorkflowRequest {
            context: _,
            workflow,
        } = request.into_inner();
        let mut v = Violations::new();
        let Some(workflow) = workflow else {
            v.add("workflow", "is required");
            v.into_result()?;
            return Err(Status::invalid_argument("workflow is required"));
        };
        if workflow.name.trim().is_empty() {
            v.add("workflow.name", "is required");
        }
        check_nodes(&workflow, &mut v);
        if workflow.connections.is_none() {
            v.add("workflow.connections", "is required");
        }
        v.into_result()?;
        self.check_connection(&connection).await?;
        let body = WritableWorkflow::from_port(&workflow).to_json();
        // Not retried: n8n takes no idempotency key, and a repeat would create a twin.
        let response = self
            .api(
                &connection,
                reqwest::Method::POST,
                "/workflows",
                Some(&body),
                Retry::Never,
            )
            .await?;
        let mut created = convert::parse_workflow(&response.body)?;
        if workflow.active {
            created = self
                .set_active(&connection, &created.id, true)
                .await
                .map_err(|e| {
                    let ProviderError { message, .. } = &e;
                    let message = format!(
                        "workflow {} was created but not activated: {message}",
                        created.id
                    );
                    ProviderError {
                        message,
                        ..e.clone()
                    }
                })?;
        }
        Ok(Response::new(CreateWorkflowResponse {
            workflow: Some(convert::workflow_of(&created)),
        }))
    }

    async fn update_workflow(
        &self,
        request: Request<UpdateWorkflowRequest>,
    ) -> Result<Response<UpdateWorkflowResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let UpdateWorkflowRequest {
            context: _,
            workflow,
            update_mask,
        } = request.into_inner();
        let mut v = Violations::new();
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        let mask = Mask::parse(&paths, &mut v);
        let Some(workflow) = workflow else {
            v.add("workflow", "is required");
            v.into_result()?;
            return Err(Status::invalid_argument("workflow is required"));
        };
        if workflow.id.trim().is_empty() {
            v.add("workflow.id", "is required");
        } else if !workflow
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            v.add("workflow.id", "is not an n8n workflow id");
        }
        if mask.name && workflow.name.trim().is_empty() {
            v.add("workflow.name", "is required");
        }
        if mask.nodes {
            check_nodes(&workflow, &mut v);
        }
        if mask.connections && workflow.connections.is_none() {
            v.add("workflow.connections", "is required");
        }
        v.into_result()?;
        self.check_connection(&connection).await?;
        let mut current = self.get_workflow(&connection, &workflow.id).await?;
        if mask.touches_definition() {
            let incoming = WritableWorkflow::from_port(&workflow);
            let mut merged = WritableWorkflow::from_n8n(&current);
            if mask.name {
                merged.name = incoming.name;
            }
            if mask.nodes {
                merged.nodes = incoming.nodes;
            }
            if mask.connections {
                merged.connections = incoming.connections;
            }
            if mask.settings {
                merged.settings = incoming.settings;
            }
            // A PUT of the whole workflow is idempotent, so it may be retried.
            let response = self
                .api(
                    &connection,
                    reqwest::Method::PUT,
                    &format!("/workflows/{}", workflow.id),
                    Some(&merged.to_json()),
                    Retry::Safe,
                )
                .await?;
            current = convert::parse_workflow(&response.body)?;
        }
        if mask.active && workflow.active != current.active {
            current = self
                .set_active(&connection, &workflow.id, workflow.active)
                .await?;
        }
        Ok(Response::new(UpdateWorkflowResponse {
            workflow: Some(convert::workflow_of(&current)),
        }))
    }

    async fn execute_workflow(
        &self,
        request: Request<ExecuteWorkflowRequest>,
    ) -> Result<Response<ExecuteWorkflowResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let ExecuteWorkflowRequest {
            context: _,
            webhook_path,
            payload,
            timeout,
        } = request.into_inner();
        let mut v = Violations::new();
        check_webhook_path(&webhook_path, &mut v);
        let timeout = match timeout {
            None => self.config.webhook_timeout(),
            Some(d) => match Duration::try_from(d) {
                Ok(d) if !d.is_zero() && d <= self.config.max_webhook_timeout() => d,
                _ => {
                    v.add(
                        "timeout",
                        format!(
                            "must be positive and at most {} s",
                            self.config.max_webhook_timeout().as_secs()
                        ),
                    );
                    Duration::ZERO
                }
            },
        };
        v.into_result()?;
        self.check_connection(&connection).await?;
        let correlation = if connection.idempotency_key.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            connection.idempotency_key.clone()
        };
        let mut body = payload.as_ref().map_or_else(
            || Value::Object(Default::default()),
            convert::struct_to_json,
        );
        if let Value::Object(map) = &mut body {
            map.insert(
                self.config.correlation_field.clone(),
                Value::String(correlation.clone()),
            );
        }
        let path = format!(
            "/{}/{}",
            self.config.webhook_prefix.trim_matches('/'),
            webhook_path.trim_matches('/')
        );
        // Not retried after an ambiguous failure: every delivery starts another run.
        let response = self
            .http
            .call(
                &*self.creds,
                &connection.name,
                Retry::Never,
                |client, credential| {
                    client
                        .post(format!("{}{path}", instance(credential)))
                        .header("X-Correlation-Id", &correlation)
                        .timeout(timeout)
                        .json(&body)
                },
            )
            .await?;
        let answer: Option<Value> = serde_json::from_slice(&response.body).ok();
        let named = answer
            .as_ref()
            .and_then(|a| a.get("executionId"))
            .map(convert::id_text)
            .filter(|id| !id.is_empty());
        let execution_id = match named {
            Some(id) => id,
            None => self
                .find_execution(&connection, &correlation)
                .await
                .unwrap_or_default(),
        };
        Ok(Response::new(ExecuteWorkflowResponse {
            execution_id,
            status_code: i32::from(response.status),
            response: convert::answer_value(&response.body),
        }))
    }

    async fn get_execution_status(
        &self,
        request: Request<GetExecutionStatusRequest>,
    ) -> Result<Response<GetExecutionStatusResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let GetExecutionStatusRequest {
            context: _,
            execution_id,
            include_data,
        } = request.into_inner();
        let mut v = Violations::new();
        if execution_id.is_empty() {
            v.add("execution_id", "is required");
        } else if !execution_id.chars().all(|c| c.is_ascii_digit()) {
            v.add("execution_id", "n8n execution ids are numbers");
        }
        v.into_result()?;
        self.check_connection(&connection).await?;
        let fetch = |with_data: bool| {
            let path = format!("/executions/{execution_id}?includeData={with_data}");
            let connection = &connection;
            async move {
                self.api(connection, reqwest::Method::GET, &path, None, Retry::Safe)
                    .await?
                    .json::<ExecutionJson>()
            }
        };
        let mut execution = fetch(include_data).await?;
        let failed = matches!(execution.status.as_deref(), Some("error" | "crashed"));
        if failed && !include_data {
            // The error message lives in the run data; fetch it once rather than always.
            execution = fetch(true).await?;
        }
        Ok(Response::new(convert::execution_of(
            &execution,
            include_data,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_paths() {
        let mut v = Violations::new();
        let m = Mask::parse(&["name".into(), "active".into()], &mut v);
        assert!(v.is_empty());
        assert!(m.name && m.active && !m.nodes);
        Mask::parse(&["tags".into()], &mut v);
        assert!(!v.is_empty());
        for ok in ["book", "a/b-c", "/lead/new/"] {
            let mut v = Violations::new();
            check_webhook_path(ok, &mut v);
            assert!(v.is_empty(), "{ok}");
        }
        for bad in ["", "../api/v1/workflows", "a?b", "http://evil/x", "a//b"] {
            let mut v = Violations::new();
            check_webhook_path(bad, &mut v);
            assert!(!v.is_empty(), "{bad}");
        }
    }
}
