//! The model list (`GET /models`, public) cached for a while: it names the models that exist,
//! their per-token prices and whether they take structured outputs. One fetch serves every
//! connection, since the list is the same for all keys.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::{money, ProviderError, ProviderHttp, Retry};
use maxai_kit::ErrorKind;
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::sync::Mutex;

/// What the adapter needs to know of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    /// USD per prompt token; `None` when OpenRouter publishes no fixed price (e.g. "-1" for
    /// routers whose price depends on the model chosen).
    pub prompt: Option<Decimal>,
    pub completion: Option<Decimal>,
    pub request: Option<Decimal>,
    pub structured_outputs: bool,
}

pub type Models = Arc<HashMap<String, ModelInfo>>;

pub struct ModelCache {
    ttl: Duration,
    // A tokio mutex held across the fetch: concurrent callers wait for one fetch instead of
    // each asking OpenRouter.
    state: Mutex<Option<(Instant, Models)>>,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelJson>,
}

#[derive(Deserialize)]
struct ModelJson {
    id: String,
    #[serde(default)]
    pricing: PricingJson,
    #[serde(default)]
    supported_parameters: Vec<String>,
}

#[derive(Deserialize, Default)]
struct PricingJson {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    completion: Option<String>,
    #[serde(default)]
    request: Option<String>,
}

fn price(text: Option<&str>) -> Option<Decimal> {
    let value = money::parse_decimal(text?).ok()?;
    (value >= Decimal::ZERO).then_some(value)
}

/// Parses a `/models` body.
pub fn parse(body: &[u8]) -> Result<HashMap<String, ModelInfo>, ProviderError> {
    let list: ModelList = serde_json::from_slice(body).map_err(|e| {
        ProviderError::new(
            crate::PROVIDER,
            ErrorKind::Provider,
            format!("unexpected model list: {e}"),
        )
    })?;
    Ok(list
        .data
        .into_iter()
        .map(|m| {
            let ModelJson {
                id,
                pricing,
                supported_parameters,
            } = m;
            let PricingJson {
                prompt,
                completion,
                request,
            } = pricing;
            let structured_outputs = supported_parameters
                .iter()
                .any(|p| p == "response_format" || p == "structured_outputs");
            let info = ModelInfo {
                id: id.clone(),
                prompt: price(prompt.as_deref()),
                completion: price(completion.as_deref()),
                request: price(request.as_deref()).or(Some(Decimal::ZERO)),
                structured_outputs,
            };
            (id, info)
        })
        .collect())
}

impl ModelCache {
    pub fn new(ttl: Duration) -> Self {
        ModelCache {
            ttl,
            state: Mutex::new(None),
        }
    }

    /// The current list, fetched when missing or older than the TTL.
    pub async fn get(&self, http: &ProviderHttp) -> Result<Models, ProviderError> {
        let mut state = self.state.lock().await;
        if let Some((at, models)) = state.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(models.clone());
            }
        }
        let url = http.url("/models");
        let response = http
            .send("models", Retry::Safe, |client| client.get(&url))
            .await?;
        let models = Arc::new(parse(&response.body)?);
        *state = Some((Instant::now(), models.clone()));
        Ok(models)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_and_variable_prices_unknown() {
        let body = br#"{"data":[
            {"id":"openai/gpt-4o-mini","pricing":{"prompt":"0.00000015","completion":"0.0000006","request":"0"},
             "supported_parameters":["max_tokens","response_format"]},
            {"id":"openrouter/auto","pricing":{"prompt":"-1","completion":"-1"}}
        ]}"#;
        let models = parse(body).expect("parse");
        let mini = &models["openai/gpt-4o-mini"];
        assert_eq!(mini.prompt, Some(Decimal::new(15, 8)));
        assert!(mini.structured_outputs);
        let auto = &models["openrouter/auto"];
        assert_eq!(auto.prompt, None);
        assert!(!auto.structured_outputs);
    }
}
