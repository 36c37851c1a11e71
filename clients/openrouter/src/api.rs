//! The tonic service: validate → convert → provider call → map.
use maxai_adapter::credentials::require_provider;
use maxai_adapter::{Connection, ProviderError, Retry};
use maxai_kit::error::Violations;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::iam::v1::ConnectionProvider;
use maxai_proto::maxai::ports::llm::v1::llm_service_server::LlmService;
use maxai_proto::maxai::ports::llm::v1::{
    ChatMessage, EstimateCostRequest, EstimateCostResponse, FinishReason,
    GenerateStructuredRequest, GenerateStructuredResponse, GenerateTextRequest,
    GenerateTextResponse, ModelPricing, Role,
};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};

use crate::convert::{self, Answer, Sampling};
use crate::models::Models;
use crate::{OpenRouterAdapter, PROVIDER};

/// Errors of a structured reply reported at most.
const MAX_SCHEMA_ERRORS: usize = 5;

fn is_model_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((author, model)) => {
            !author.is_empty()
                && !model.is_empty()
                && !name.chars().any(char::is_whitespace)
                && name.len() <= 200
        }
        None => false,
    }
}

/// The checks both generate RPCs share; they need nothing from the provider.
fn check_sampling(s: &Sampling<'_>, v: &mut Violations) {
    if s.model.is_empty() {
        v.add("model", "is required");
    } else if !is_model_name(s.model) {
        v.add(
            "model",
            "must be \"provider/model\", e.g. openai/gpt-4o-mini",
        );
    }
    if s.messages.is_empty() {
        v.add("messages", "needs at least one message");
    }
    for (i, m) in s.messages.iter().enumerate() {
        let ChatMessage { role, content } = m;
        if convert::role(Role::try_from(*role).unwrap_or(Role::Unspecified)).is_none() {
            v.add(format!("messages[{i}].role"), "is required");
        }
        if content.is_empty() {
            v.add(format!("messages[{i}].content"), "is required");
        }
    }
    if s.max_tokens < 0 {
        v.add("max_tokens", "must not be negative");
    }
    if let Some(t) = s.temperature {
        if !(0.0..=2.0).contains(&t) {
            v.add("temperature", "must be between 0 and 2");
        }
    }
    for (i, stop) in s.stop.iter().enumerate() {
        if stop.is_empty() {
            v.add(format!("stop[{i}]"), "must not be empty");
        }
    }
    for (i, m) in s.fallback_models.iter().enumerate() {
        if !is_model_name(m) {
            v.add(
                format!("fallback_models[{i}]"),
                "must be \"provider/model\"",
            );
        }
    }
}

/// Models the provider does not list are refused before anything is spent.
fn check_known(models: &Models, s: &Sampling<'_>, structured: bool, v: &mut Violations) {
    match models.get(s.model) {
        None => v.add("model", format!("{} is not an OpenRouter model", s.model)),
        Some(m) if structured && !m.structured_outputs => v.add(
            "model",
            format!("{} does not support structured outputs", s.model),
        ),
        Some(_) => {}
    }
    for (i, m) in s.fallback_models.iter().enumerate() {
        if !models.contains_key(m.as_str()) {
            v.add(
                format!("fallback_models[{i}]"),
                format!("{m} is not an OpenRouter model"),
            );
        }
    }
}

fn schema_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Strips a Markdown code fence some models put around JSON despite the response format.
fn unfenced(text: &str) -> &str {
    let t = text.trim();
    match t.strip_prefix("```") {
        Some(rest) => {
            let rest = rest.strip_prefix("json").unwrap_or(rest);
            rest.strip_suffix("```").unwrap_or(rest).trim()
        }
        None => t,
    }
}

fn invalid_reply(message: impl Into<String>) -> Status {
    ProviderError::new(PROVIDER, ErrorKind::Provider, message).into()
}

impl OpenRouterAdapter {
    /// Refuses a connection of another provider before anything is sent.
    async fn check_connection(&self, connection: &Connection) -> Result<(), Status> {
        let credential = self
            .creds
            .credential(&connection.name, false)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound | tonic::Code::Unauthenticated => Status::from(
                    maxai_kit::Error::new(ErrorKind::PreconditionFailed, s.message().to_owned()),
                ),
                _ => s,
            })?;
        require_provider(&credential, &[ConnectionProvider::Openrouter])
    }

    /// The model list; for the generate RPCs a failure to fetch it skips the check
    /// (OpenRouter refuses unknown models itself) rather than failing a paid call's caller.
    async fn models_for_check(&self) -> Option<Models> {
        match self.models.get(&self.http).await {
            Ok(models) => Some(models),
            Err(e) => {
                tracing::warn!(error = %e, "openrouter model list unavailable, model check skipped");
                None
            }
        }
    }

    async fn complete(
        &self,
        connection: &Connection,
        body: Map<String, Value>,
    ) -> Result<Answer, Status> {
        let url = self.http.url("/chat/completions");
        let body = Value::Object(body);
        let timeout = self.config.completion_timeout();
        let (app_url, app_title) = (&self.config.app_url, &self.config.app_title);
        // Never repeated after an ambiguous failure: a completion costs money and OpenRouter
        // takes no idempotency key (429s and refused connections are still retried).
        let response = self
            .http
            .call(
                &*self.creds,
                &connection.name,
                Retry::Never,
                |client, credential| {
                    let mut request = client
                        .post(&url)
                        .bearer_auth(&credential.api_key)
                        .timeout(timeout)
                        .json(&body);
                    if !app_url.is_empty() {
                        request = request.header("HTTP-Referer", app_url);
                    }
                    if !app_title.is_empty() {
                        request = request.header("X-Title", app_title);
                    }
                    request
                },
            )
            .await?;
        Ok(convert::answer(&response.body)?)
    }
}

#[tonic::async_trait]
impl LlmService for OpenRouterAdapter {
    async fn generate_text(
        &self,
        request: Request<GenerateTextRequest>,
    ) -> Result<Response<GenerateTextResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let GenerateTextRequest {
            context: _,
            model,
            messages,
            max_tokens,
            temperature,
            stop,
            fallback_models,
        } = request.into_inner();
        let sampling = Sampling {
            model: &model,
            messages: &messages,
            max_tokens,
            temperature,
            stop: &stop,
            fallback_models: &fallback_models,
        };
        let mut v = Violations::new();
        check_sampling(&sampling, &mut v);
        v.into_result()?;
        self.check_connection(&connection).await?;
        if let Some(models) = self.models_for_check().await {
            let mut v = Violations::new();
            check_known(&models, &sampling, false, &mut v);
            v.into_result()?;
        }
        let answer = self
            .complete(&connection, convert::completion_body(&sampling))
            .await?;
        let Answer {
            text,
            finish_reason,
            late_error,
            model,
            generation_id,
            usage,
        } = answer;
        if let Some(e) = late_error {
            // The partial text and its cost are still the caller's; the reason says it broke.
            tracing::warn!(error = %e, generation_id, "openrouter reported an error after generation started");
        }
        Ok(Response::new(GenerateTextResponse {
            text,
            finish_reason: finish_reason as i32,
            model,
            generation_id,
            usage: Some(usage),
        }))
    }

    async fn generate_structured(
        &self,
        request: Request<GenerateStructuredRequest>,
    ) -> Result<Response<GenerateStructuredResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let GenerateStructuredRequest {
            context: _,
            model,
            messages,
            json_schema,
            schema_name,
            strict,
            max_tokens,
            temperature,
            stop,
            fallback_models,
        } = request.into_inner();
        let sampling = Sampling {
            model: &model,
            messages: &messages,
            max_tokens,
            temperature,
            stop: &stop,
            fallback_models: &fallback_models,
        };
        let mut v = Violations::new();
        check_sampling(&sampling, &mut v);
        if !schema_name_ok(&schema_name) {
            v.add(
                "schema_name",
                "must match [a-zA-Z0-9_-], 1 to 64 characters",
            );
        }
        let schema = json_schema.as_ref().map(convert::struct_to_json);
        let validator = match &schema {
            None => {
                v.add("json_schema", "is required");
                None
            }
            Some(schema) => {
                if schema.get("type") != Some(&json!("object")) {
                    v.add("json_schema", "the root type must be \"object\"");
                }
                if strict && schema.get("additionalProperties") != Some(&json!(false)) {
                    v.add(
                        "json_schema",
                        "strict needs \"additionalProperties\": false at the root",
                    );
                }
                match jsonschema::validator_for(schema) {
                    Ok(validator) => Some(validator),
                    Err(e) => {
                        v.add(
                            "json_schema",
                            format!("is not a valid JSON Schema: {}", e.masked()),
                        );
                        None
                    }
                }
            }
        };
        v.into_result()?;
        let (Some(schema), Some(validator)) = (schema, validator) else {
            // Unreachable: a missing or invalid schema added a violation above.
            return Err(Status::invalid_argument("json_schema is required"));
        };
        self.check_connection(&connection).await?;
        if let Some(models) = self.models_for_check().await {
            let mut v = Violations::new();
            check_known(&models, &sampling, true, &mut v);
            v.into_result()?;
        }
        let mut body = convert::completion_body(&sampling);
        body.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {
                "name": schema_name, "strict": strict, "schema": schema
            }}),
        );
        // Only providers that honour response_format may serve this call.
        body.insert("provider".into(), json!({"require_parameters": true}));
        let Answer {
            text,
            finish_reason,
            late_error,
            model,
            generation_id,
            usage,
        } = self.complete(&connection, body).await?;
        // A refused reply was still generated and billed by OpenRouter: leave a trace that
        // names the generation so its cost can be reconciled through `/generation`.
        let refused = |why: &str| {
            tracing::warn!(
                generation_id,
                cost = ?usage.provider_cost,
                why,
                "structured reply refused after it was paid for"
            );
        };
        if let Some(e) = late_error {
            refused("error after generation started");
            return Err(e.into());
        }
        if finish_reason == FinishReason::Length {
            refused("cut at max_tokens");
            return Err(invalid_reply(format!(
                "the structured reply of generation {generation_id} was cut at max_tokens"
            )));
        }
        let output: Value = serde_json::from_str(unfenced(&text)).map_err(|e| {
            refused("not JSON");
            invalid_reply(format!(
                "the reply of generation {generation_id} is not JSON: {e}"
            ))
        })?;
        let problems: Vec<String> = validator
            .iter_errors(&output)
            .take(MAX_SCHEMA_ERRORS)
            .map(|e| {
                let path = e.instance_path().as_str().to_owned();
                format!(
                    "{}: {}",
                    if path.is_empty() { "/" } else { &path },
                    e.masked()
                )
            })
            .collect();
        if !problems.is_empty() {
            refused("does not match the schema");
            return Err(invalid_reply(format!(
                "the reply of generation {generation_id} does not match the schema: {}",
                problems.join("; ")
            )));
        }
        let Some(output) = convert::json_to_struct(&output) else {
            return Err(invalid_reply("the reply is not a JSON object"));
        };
        Ok(Response::new(GenerateStructuredResponse {
            output: Some(output),
            finish_reason: finish_reason as i32,
            model,
            generation_id,
            usage: Some(usage),
        }))
    }

    async fn estimate_cost(
        &self,
        request: Request<EstimateCostRequest>,
    ) -> Result<Response<EstimateCostResponse>, Status> {
        Connection::of(&request, request.get_ref().context.as_ref())?;
        let EstimateCostRequest {
            context: _,
            model,
            input_tokens,
            output_tokens,
        } = request.into_inner();
        let mut v = Violations::new();
        if model.is_empty() {
            v.add("model", "is required");
        } else if !is_model_name(&model) {
            v.add(
                "model",
                "must be \"provider/model\", e.g. openai/gpt-4o-mini",
            );
        }
        v.check(input_tokens >= 0, "input_tokens", "must not be negative");
        v.check(output_tokens >= 0, "output_tokens", "must not be negative");
        v.into_result()?;
        let models = self.models.get(&self.http).await?;
        let Some(info) = models.get(&model) else {
            let mut v = Violations::new();
            v.add("model", format!("{model} is not an OpenRouter model"));
            v.into_result()?;
            return Err(Status::invalid_argument("unknown model"));
        };
        let (Some(prompt), Some(completion)) = (info.prompt, info.completion) else {
            return Err(maxai_kit::Error::new(
                ErrorKind::PreconditionFailed,
                format!("{model} has no fixed published price"),
            )
            .into());
        };
        let request_price = info.request.unwrap_or(Decimal::ZERO);
        let input_cost = prompt * Decimal::from(input_tokens);
        let output_cost = completion * Decimal::from(output_tokens);
        let total = input_cost + output_cost + request_price;
        Ok(Response::new(EstimateCostResponse {
            estimated_cost: Some(convert::money_of(total)?),
            input_cost: Some(convert::money_of(input_cost)?),
            output_cost: Some(convert::money_of(output_cost)?),
            pricing: Some(ModelPricing {
                input_token_price: Some(convert::money_of(prompt)?),
                output_token_price: Some(convert::money_of(completion)?),
                request_price: Some(convert::money_of(request_price)?),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_and_fences() {
        assert!(is_model_name("openai/gpt-4o-mini"));
        assert!(is_model_name("meta-llama/llama-3.1-8b-instruct:free"));
        for bad in ["gpt-4o", "/x", "x/", "a b/c"] {
            assert!(!is_model_name(bad), "{bad}");
        }
        assert_eq!(unfenced("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(unfenced(" {\"a\":1} "), "{\"a\":1}");
        assert!(schema_name_ok("contact_v2-x"));
        assert!(!schema_name_ok("bad name"));
    }
}
