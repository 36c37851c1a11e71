//! The voice port's RPCs: validate the request (field violations before any Retell call),
//! check the connection's credential is a Retell one, call Retell, map the answer.
use maxai_adapter::credentials::require_provider;
use maxai_adapter::{Connection, ProviderError, ProviderResponse, Retry};
use maxai_kit::error::Violations;
use maxai_kit::{Error, ErrorKind};
use maxai_proto::maxai::iam::v1::ConnectionProvider;
use maxai_proto::maxai::ports::voice::v1::voice_service_server::VoiceService;
use maxai_proto::maxai::ports::voice::v1::{
    Agent, CreateAgentRequest, CreateAgentResponse, GetCallAnalysisRequest,
    GetCallAnalysisResponse, UpdateAgentRequest, UpdateAgentResponse,
};
use reqwest::Method;
use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};

use crate::convert::{
    self, agent_body, agent_from_wire, check_agent, check_llm, llm_body, llm_has_fields, valid_id,
    AgentPath, LlmPath, Mode, Paths, WireAgent, WireLlm,
};
use crate::{RetellAdapter, PROVIDER};

/// Retell's words for an id that is unknown under the key (it answers 422, not 404).
const UNKNOWN_ASSET: &str = "Cannot find requested asset";

fn refine(e: ProviderError) -> ProviderError {
    if e.http_status == Some(422) && e.message.starts_with(UNKNOWN_ASSET) {
        e.with_kind(ErrorKind::NotFound)
    } else {
        e
    }
}

fn unexpected(message: &str) -> Status {
    ProviderError::new(PROVIDER, ErrorKind::Provider, message).into()
}

impl RetellAdapter {
    /// Refuses a connection that is not a Retell one or has no API key, before Retell is called.
    async fn check_credential(&self, connection: &Connection) -> Result<(), Status> {
        let credential = self
            .creds
            .credential(&connection.name, false)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::NotFound | tonic::Code::Unauthenticated => Status::from(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!(
                        "no usable credential for {}: {}",
                        connection.name,
                        status.message()
                    ),
                )),
                _ => status,
            })?;
        require_provider(&credential, &[ConnectionProvider::Retell])?;
        if credential.api_key.is_empty() {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("connection {} has no Retell API key", connection.name),
            )
            .into());
        }
        Ok(())
    }

    async fn get(
        &self,
        connection: &Connection,
        path: &str,
    ) -> Result<ProviderResponse, ProviderError> {
        let url = self.http.url(path);
        self.http
            .call(
                &*self.creds,
                &connection.name,
                Retry::Safe,
                |client, credential| client.get(&url).bearer_auth(&credential.api_key),
            )
            .await
            .map_err(refine)
    }

    async fn send(
        &self,
        connection: &Connection,
        method: Method,
        path: &str,
        body: &Map<String, Value>,
        retry: Retry,
    ) -> Result<ProviderResponse, ProviderError> {
        let url = self.http.url(path);
        self.http
            .call(
                &*self.creds,
                &connection.name,
                retry,
                |client, credential| {
                    client
                        .request(method.clone(), &url)
                        .bearer_auth(&credential.api_key)
                        .json(body)
                },
            )
            .await
            .map_err(refine)
    }

    /// Best effort: an LLM whose agent could not be created would only clutter the account.
    async fn discard_llm(&self, connection: &Connection, llm_id: &str) {
        let url = self.http.url(&format!("/delete-retell-llm/{llm_id}"));
        let result = self
            .http
            .call(
                &*self.creds,
                &connection.name,
                Retry::Safe,
                |client, credential| client.delete(&url).bearer_auth(&credential.api_key),
            )
            .await;
        if let Err(error) = result {
            tracing::warn!(
                connection = %connection.name,
                llm_id,
                %error,
                "could not delete the retell llm of a failed agent create"
            );
        }
    }

    async fn get_agent(
        &self,
        connection: &Connection,
        agent_id: &str,
    ) -> Result<WireAgent, Status> {
        let response = self
            .get(connection, &format!("/get-agent/{agent_id}"))
            .await?;
        Ok(WireAgent::parse(&response.body)?)
    }

    async fn get_llm(&self, connection: &Connection, llm_id: &str) -> Result<WireLlm, Status> {
        let response = self
            .get(connection, &format!("/get-retell-llm/{llm_id}"))
            .await?;
        Ok(WireLlm::parse(&response.body)?)
    }
}

fn require_agent(agent: Option<Agent>, v: &mut Violations) -> Agent {
    agent.unwrap_or_else(|| {
        v.add("agent", "is required");
        Agent::default()
    })
}

#[tonic::async_trait]
impl VoiceService for RetellAdapter {
    async fn create_agent(
        &self,
        request: Request<CreateAgentRequest>,
    ) -> Result<Response<CreateAgentResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let CreateAgentRequest { context: _, agent } = request.into_inner();
        let mut v = Violations::new();
        let agent = require_agent(agent, &mut v);
        check_agent(&agent, &AgentPath::ALL, "agent", &mut v);
        let reuse = agent
            .llm
            .as_ref()
            .map(|llm| llm.llm_id.clone())
            .filter(|id| !id.is_empty());
        match (&reuse, &agent.llm) {
            (Some(id), Some(llm)) => {
                v.check(valid_id(id), "agent.llm.llm_id", "is not a Retell LLM id");
                v.check(
                    !llm_has_fields(llm),
                    "agent.llm",
                    "give either llm_id, to reuse an LLM as stored, or the fields of a new one",
                );
            }
            _ => check_llm(agent.llm.as_ref(), &LlmPath::ALL, "agent.llm", &mut v),
        }
        v.into_result()?;
        self.check_credential(&connection).await?;

        let (llm, created) = match reuse {
            Some(id) => (self.get_llm(&connection, &id).await?, false),
            None => {
                let llm = agent.llm.clone().unwrap_or_default();
                let body = llm_body(&llm, &LlmPath::ALL, Mode::Create);
                let response = self
                    .send(
                        &connection,
                        Method::POST,
                        "/create-retell-llm",
                        &body,
                        Retry::Never,
                    )
                    .await?;
                (WireLlm::parse(&response.body)?, true)
            }
        };
        let llm_id = llm
            .llm_id
            .clone()
            .filter(|id| valid_id(id))
            .ok_or_else(|| unexpected("Retell answered a Retell LLM without a usable llm_id"))?;
        let mut body = agent_body(&agent, &AgentPath::ALL, Mode::Create);
        body.insert(
            "response_engine".to_owned(),
            json!({"type": "retell-llm", "llm_id": llm_id}),
        );
        let created_agent = match self
            .send(
                &connection,
                Method::POST,
                "/create-agent",
                &body,
                Retry::Never,
            )
            .await
        {
            Ok(response) => WireAgent::parse(&response.body)?,
            Err(error) => {
                if created {
                    self.discard_llm(&connection, &llm_id).await;
                }
                return Err(error.into());
            }
        };
        Ok(Response::new(CreateAgentResponse {
            agent: Some(agent_from_wire(created_agent, Some(llm))),
        }))
    }

    async fn update_agent(
        &self,
        request: Request<UpdateAgentRequest>,
    ) -> Result<Response<UpdateAgentResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let UpdateAgentRequest {
            context: _,
            agent,
            update_mask,
        } = request.into_inner();
        let mut v = Violations::new();
        let agent = require_agent(agent, &mut v);
        if agent.agent_id.is_empty() {
            v.add("agent.agent_id", "is required");
        } else if !valid_id(&agent.agent_id) {
            v.add("agent.agent_id", "is not a Retell agent id");
        }
        let mask = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut paths = Paths::parse(&mask, &mut v);
        if mask.is_empty() && agent.llm.is_none() {
            // A whole-agent update without an LLM leaves the prompt alone.
            paths.llm.clear();
        }
        check_agent(&agent, &paths.agent, "agent", &mut v);
        check_llm(agent.llm.as_ref(), &paths.llm, "agent.llm", &mut v);
        v.into_result()?;
        self.check_credential(&connection).await?;

        let agent_id = agent.agent_id.as_str();
        let mut wire_agent = None;
        let mut wire_llm = None;
        if !paths.llm.is_empty() {
            // The LLM to change is the one the agent uses now, never one the caller names.
            let current = self.get_agent(&connection, agent_id).await?;
            let llm_id = current.llm_id().map(str::to_owned).ok_or_else(|| {
                Status::from(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("agent {agent_id} does not use a Retell LLM, so llm.* paths cannot be updated"),
                ))
            })?;
            let llm = agent.llm.clone().unwrap_or_default();
            let body = llm_body(&llm, &paths.llm, Mode::Update);
            let response = self
                .send(
                    &connection,
                    Method::PATCH,
                    &format!("/update-retell-llm/{llm_id}"),
                    &body,
                    Retry::Safe,
                )
                .await?;
            wire_llm = Some(WireLlm::parse(&response.body)?);
            wire_agent = Some(current);
        }
        if !paths.agent.is_empty() {
            let body = agent_body(&agent, &paths.agent, Mode::Update);
            let response = self
                .send(
                    &connection,
                    Method::PATCH,
                    &format!("/update-agent/{agent_id}"),
                    &body,
                    Retry::Safe,
                )
                .await?;
            wire_agent = Some(WireAgent::parse(&response.body)?);
        }
        let wire_agent = match wire_agent {
            Some(agent) => agent,
            None => self.get_agent(&connection, agent_id).await?,
        };
        if wire_llm.is_none() {
            if let Some(llm_id) = wire_agent.llm_id().map(str::to_owned) {
                wire_llm = Some(self.get_llm(&connection, &llm_id).await?);
            }
        }
        Ok(Response::new(UpdateAgentResponse {
            agent: Some(agent_from_wire(wire_agent, wire_llm)),
        }))
    }

    async fn get_call_analysis(
        &self,
        request: Request<GetCallAnalysisRequest>,
    ) -> Result<Response<GetCallAnalysisResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let GetCallAnalysisRequest {
            context: _,
            call_id,
        } = request.into_inner();
        let mut v = Violations::new();
        if call_id.is_empty() {
            v.add("call_id", "is required");
        } else if !valid_id(&call_id) {
            v.add("call_id", "is not a Retell call id");
        }
        v.into_result()?;
        self.check_credential(&connection).await?;
        let response = self
            .get(&connection, &format!("/v2/get-call/{call_id}"))
            .await?;
        Ok(Response::new(convert::call_from_json(&response.body)?))
    }
}
