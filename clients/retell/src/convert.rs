//! Retell JSON ⇄ voice-port messages.
//!
//! Outbound bodies are built per field path, so a create sends only what is set and an update
//! sends exactly the masked paths (an emptied field is sent as `null`, which Retell reads as
//! "back to the default"). Inbound objects are read into wire structs that are destructured
//! without `..`, so a field added here has to be mapped or consciously dropped.
use std::collections::HashMap;

use maxai_adapter::{money, ProviderError};
use maxai_kit::error::Violations;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::common::v1::{Money, Usage, UsageItem};
use maxai_proto::maxai::ports::voice::v1::{
    Agent, AgentLlm, AnalysisField, AnalysisFieldKind, CallAnalysis, CallDirection, CallKind,
    CallStatus, DataStorageSetting, GetCallAnalysisResponse, Sentiment, StartSpeaker,
    TranscriptRole, TranscriptTurn,
};
use serde::Deserialize;
use serde_json::{json, Map, Number, Value};

use crate::PROVIDER;

/// Retell bills in US dollars and reports costs in cents.
const CURRENCY: &str = "USD";
const CENT_EXPONENT: u32 = 2;
pub const METER_CALL_SECONDS: &str = "voice.call.seconds";
/// Prefix of the per-product breakdown meters, e.g. "voice.call.product.elevenlabs_tts".
pub const METER_PRODUCT_PREFIX: &str = "voice.call.product.";
/// The custom analysis field the port lifts into `CallAnalysis.appointment_booked`.
const APPOINTMENT_BOOKED: &str = "appointment_booked";

/// Event names Retell accepts in `webhook_events`.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "call_started",
    "call_ended",
    "call_analyzed",
    "transcript_updated",
    "transfer_started",
    "transfer_bridged",
    "transfer_cancelled",
    "transfer_ended",
];

/// Whether a body is for a create (unset fields left out) or an update (unset fields reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    Update,
}

/// The agent paths of UpdateAgent's mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPath {
    AgentName,
    VoiceId,
    Language,
    WebhookUrl,
    WebhookEvents,
    PostCallAnalysisFields,
    PostCallAnalysisModel,
    MaxCallDuration,
    EndCallAfterSilence,
    DataStorageSetting,
}

impl AgentPath {
    pub const ALL: [AgentPath; 10] = [
        AgentPath::AgentName,
        AgentPath::VoiceId,
        AgentPath::Language,
        AgentPath::WebhookUrl,
        AgentPath::WebhookEvents,
        AgentPath::PostCallAnalysisFields,
        AgentPath::PostCallAnalysisModel,
        AgentPath::MaxCallDuration,
        AgentPath::EndCallAfterSilence,
        AgentPath::DataStorageSetting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AgentPath::AgentName => "agent_name",
            AgentPath::VoiceId => "voice_id",
            AgentPath::Language => "language",
            AgentPath::WebhookUrl => "webhook_url",
            AgentPath::WebhookEvents => "webhook_events",
            AgentPath::PostCallAnalysisFields => "post_call_analysis_fields",
            AgentPath::PostCallAnalysisModel => "post_call_analysis_model",
            AgentPath::MaxCallDuration => "max_call_duration",
            AgentPath::EndCallAfterSilence => "end_call_after_silence",
            AgentPath::DataStorageSetting => "data_storage_setting",
        }
    }
}

/// The LLM paths of UpdateAgent's mask (`llm.` + name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmPath {
    Model,
    GeneralPrompt,
    BeginMessage,
    Temperature,
    StartSpeaker,
    DefaultDynamicVariables,
    KnowledgeBaseIds,
}

impl LlmPath {
    pub const ALL: [LlmPath; 7] = [
        LlmPath::Model,
        LlmPath::GeneralPrompt,
        LlmPath::BeginMessage,
        LlmPath::Temperature,
        LlmPath::StartSpeaker,
        LlmPath::DefaultDynamicVariables,
        LlmPath::KnowledgeBaseIds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LlmPath::Model => "llm.model",
            LlmPath::GeneralPrompt => "llm.general_prompt",
            LlmPath::BeginMessage => "llm.begin_message",
            LlmPath::Temperature => "llm.temperature",
            LlmPath::StartSpeaker => "llm.start_speaker",
            LlmPath::DefaultDynamicVariables => "llm.default_dynamic_variables",
            LlmPath::KnowledgeBaseIds => "llm.knowledge_base_ids",
        }
    }
}

/// What an update mask selects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paths {
    pub agent: Vec<AgentPath>,
    pub llm: Vec<LlmPath>,
}

impl Paths {
    pub fn all() -> Paths {
        Paths {
            agent: AgentPath::ALL.to_vec(),
            llm: LlmPath::ALL.to_vec(),
        }
    }

    /// Parses mask paths; unknown ones are violations on `update_mask`.
    pub fn parse(mask: &[String], v: &mut Violations) -> Paths {
        if mask.is_empty() {
            return Paths::all();
        }
        let mut paths = Paths::default();
        for path in mask {
            if let Some(p) = AgentPath::ALL.into_iter().find(|p| p.name() == path) {
                if !paths.agent.contains(&p) {
                    paths.agent.push(p);
                }
            } else if let Some(p) = LlmPath::ALL.into_iter().find(|p| p.name() == path) {
                if !paths.llm.contains(&p) {
                    paths.llm.push(p);
                }
            } else {
                v.add("update_mask", format!("unknown path {path:?}"));
            }
        }
        paths
    }
}

/// Provider ids go into URL paths: only the characters Retell's ids use.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn duration_ms(d: &prost_types::Duration) -> Option<u64> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos % 1_000_000 != 0 {
        return None;
    }
    u64::try_from(d.seconds)
        .ok()?
        .checked_mul(1000)?
        .checked_add(u64::try_from(d.nanos / 1_000_000).ok()?)
}

fn from_ms(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Checks the agent fields `paths` will send; `prefix` is the request field of the agent.
pub fn check_agent(agent: &Agent, paths: &[AgentPath], prefix: &str, v: &mut Violations) {
    let field = |name: &str| format!("{prefix}.{name}");
    for path in paths {
        match path {
            AgentPath::VoiceId => {
                maxai_adapter::validate::required(&field("voice_id"), &agent.voice_id, v)
            }
            AgentPath::WebhookUrl => {
                let url = &agent.webhook_url;
                let ok = url.is_empty()
                    || ((url.starts_with("https://") || url.starts_with("http://"))
                        && !url.chars().any(char::is_whitespace));
                v.check(ok, field("webhook_url"), "must be an http(s) URL");
            }
            AgentPath::WebhookEvents => {
                for (i, event) in agent.webhook_events.iter().enumerate() {
                    v.check(
                        WEBHOOK_EVENTS.contains(&event.as_str()),
                        format!("{prefix}.webhook_events[{i}]"),
                        format!("must be one of {}", WEBHOOK_EVENTS.join(", ")),
                    );
                }
            }
            AgentPath::PostCallAnalysisFields => {
                check_analysis_fields(&agent.post_call_analysis_fields, prefix, v)
            }
            AgentPath::MaxCallDuration => {
                if let Some(d) = &agent.max_call_duration {
                    v.check(
                        duration_ms(d).is_some_and(|ms| ms > 0),
                        field("max_call_duration"),
                        "must be positive, in whole milliseconds",
                    );
                }
            }
            AgentPath::EndCallAfterSilence => {
                if let Some(d) = &agent.end_call_after_silence {
                    v.check(
                        duration_ms(d).is_some_and(|ms| ms > 0),
                        field("end_call_after_silence"),
                        "must be positive, in whole milliseconds",
                    );
                }
            }
            AgentPath::DataStorageSetting => v.check(
                DataStorageSetting::try_from(agent.data_storage_setting).is_ok(),
                field("data_storage_setting"),
                "is not a known setting",
            ),
            AgentPath::AgentName | AgentPath::Language | AgentPath::PostCallAnalysisModel => {}
        }
    }
}

fn check_analysis_fields(fields: &[AnalysisField], prefix: &str, v: &mut Violations) {
    let mut seen = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let at = |name: &str| format!("{prefix}.post_call_analysis_fields[{i}].{name}");
        if f.name.trim().is_empty() {
            v.add(at("name"), "is required");
        } else if seen.contains(&f.name.as_str()) {
            v.add(at("name"), "is used twice");
        } else {
            seen.push(f.name.as_str());
        }
        match AnalysisFieldKind::try_from(f.kind) {
            Ok(AnalysisFieldKind::Unspecified) | Err(_) => v.add(at("kind"), "is required"),
            Ok(AnalysisFieldKind::Enum) if f.choices.is_empty() => {
                v.add(at("choices"), "an enum field needs its choices")
            }
            Ok(_) => {}
        }
    }
}

/// Checks the LLM fields `paths` will send.
pub fn check_llm(llm: Option<&AgentLlm>, paths: &[LlmPath], prefix: &str, v: &mut Violations) {
    let Some(llm) = llm else {
        return;
    };
    for path in paths {
        match path {
            LlmPath::Temperature => {
                if let Some(t) = llm.temperature {
                    v.check(
                        (0.0..=1.0).contains(&t),
                        format!("{prefix}.temperature"),
                        "must be between 0 and 1",
                    );
                }
            }
            LlmPath::StartSpeaker => v.check(
                StartSpeaker::try_from(llm.start_speaker).is_ok(),
                format!("{prefix}.start_speaker"),
                "is not a known speaker",
            ),
            LlmPath::Model => v.check(
                llm.model.is_empty() || valid_id(&llm.model.replace('.', "")),
                format!("{prefix}.model"),
                "is not a model name",
            ),
            LlmPath::GeneralPrompt
            | LlmPath::BeginMessage
            | LlmPath::DefaultDynamicVariables
            | LlmPath::KnowledgeBaseIds => {}
        }
    }
}

fn text(value: &str, mode: Mode) -> Option<Value> {
    match (value.is_empty(), mode) {
        (false, _) => Some(json!(value)),
        (true, Mode::Create) => None,
        (true, Mode::Update) => Some(Value::Null),
    }
}

fn optional<T: Into<Value>>(value: Option<T>, mode: Mode) -> Option<Value> {
    match (value, mode) {
        (Some(v), _) => Some(v.into()),
        (None, Mode::Create) => None,
        (None, Mode::Update) => Some(Value::Null),
    }
}

fn analysis_item(f: &AnalysisField) -> Value {
    let AnalysisField {
        name,
        kind,
        description,
        choices,
        examples,
    } = f;
    let kind = match AnalysisFieldKind::try_from(*kind) {
        Ok(AnalysisFieldKind::Enum) => "enum",
        Ok(AnalysisFieldKind::Boolean) => "boolean",
        Ok(AnalysisFieldKind::Number) => "number",
        Ok(AnalysisFieldKind::String | AnalysisFieldKind::Unspecified) | Err(_) => "string",
    };
    let mut item = json!({"type": kind, "name": name, "description": description});
    if !choices.is_empty() {
        item["choices"] = json!(choices);
    }
    if !examples.is_empty() {
        item["examples"] = json!(examples);
    }
    item
}

fn data_storage(setting: i32) -> Option<&'static str> {
    match DataStorageSetting::try_from(setting) {
        Ok(DataStorageSetting::Everything) => Some("everything"),
        Ok(DataStorageSetting::EverythingExceptPii) => Some("everything_except_pii"),
        Ok(DataStorageSetting::BasicAttributesOnly) => Some("basic_attributes_only"),
        Ok(DataStorageSetting::Unspecified) | Err(_) => None,
    }
}

/// The Retell agent fields of `paths`.
pub fn agent_body(agent: &Agent, paths: &[AgentPath], mode: Mode) -> Map<String, Value> {
    let mut body = Map::new();
    for path in paths {
        let value = match path {
            AgentPath::AgentName => text(&agent.agent_name, mode),
            AgentPath::VoiceId => text(&agent.voice_id, mode),
            AgentPath::Language => text(&agent.language, mode),
            AgentPath::WebhookUrl => text(&agent.webhook_url, mode),
            AgentPath::WebhookEvents => optional(
                (!agent.webhook_events.is_empty()).then(|| json!(agent.webhook_events)),
                mode,
            ),
            AgentPath::PostCallAnalysisFields => {
                let items: Vec<Value> = agent
                    .post_call_analysis_fields
                    .iter()
                    .map(analysis_item)
                    .collect();
                match (items.is_empty(), mode) {
                    (true, Mode::Create) => None,
                    _ => Some(Value::Array(items)),
                }
            }
            AgentPath::PostCallAnalysisModel => text(&agent.post_call_analysis_model, mode),
            AgentPath::MaxCallDuration => {
                optional(agent.max_call_duration.as_ref().and_then(duration_ms), mode)
            }
            AgentPath::EndCallAfterSilence => optional(
                agent.end_call_after_silence.as_ref().and_then(duration_ms),
                mode,
            ),
            AgentPath::DataStorageSetting => {
                optional(data_storage(agent.data_storage_setting), mode)
            }
        };
        if let Some(value) = value {
            body.insert(retell_agent_key(*path).to_owned(), value);
        }
    }
    body
}

fn retell_agent_key(path: AgentPath) -> &'static str {
    match path {
        AgentPath::PostCallAnalysisFields => "post_call_analysis_data",
        AgentPath::MaxCallDuration => "max_call_duration_ms",
        AgentPath::EndCallAfterSilence => "end_call_after_silence_ms",
        other => other.name(),
    }
}

/// A float of the API as the decimal a person wrote (0.7, not 0.699999988079071).
fn float(value: f32) -> Value {
    format!("{value}")
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The Retell LLM fields of `paths`.
pub fn llm_body(llm: &AgentLlm, paths: &[LlmPath], mode: Mode) -> Map<String, Value> {
    let mut body = Map::new();
    for path in paths {
        let (key, value) = match path {
            LlmPath::Model => ("model", text(&llm.model, mode)),
            LlmPath::GeneralPrompt => ("general_prompt", text(&llm.general_prompt, mode)),
            // Empty lets the model decide, which Retell spells as no begin_message at all.
            LlmPath::BeginMessage => ("begin_message", text(&llm.begin_message, mode)),
            LlmPath::Temperature => (
                "model_temperature",
                optional(llm.temperature.map(float), mode),
            ),
            LlmPath::StartSpeaker => {
                let speaker = match StartSpeaker::try_from(llm.start_speaker) {
                    Ok(StartSpeaker::Agent) => Some("agent"),
                    Ok(StartSpeaker::User) => Some("user"),
                    Ok(StartSpeaker::Unspecified) | Err(_) => None,
                };
                ("start_speaker", optional(speaker, mode))
            }
            LlmPath::DefaultDynamicVariables => {
                let vars = (!llm.default_dynamic_variables.is_empty())
                    .then(|| json!(llm.default_dynamic_variables));
                ("default_dynamic_variables", optional(vars, mode))
            }
            LlmPath::KnowledgeBaseIds => {
                let ids = match (llm.knowledge_base_ids.is_empty(), mode) {
                    (true, Mode::Create) => None,
                    _ => Some(json!(llm.knowledge_base_ids)),
                };
                ("knowledge_base_ids", ids)
            }
        };
        if let Some(value) = value {
            body.insert(key.to_owned(), value);
        }
    }
    body
}

/// Whether any field of an LLM other than its id is set (reuse by id takes it as stored).
pub fn llm_has_fields(llm: &AgentLlm) -> bool {
    !llm_body(llm, &LlmPath::ALL, Mode::Create).is_empty()
}

fn bad_body(what: &str, e: &serde_json::Error) -> ProviderError {
    ProviderError::new(
        PROVIDER,
        ErrorKind::Provider,
        format!("unexpected {what} from Retell: {e}"),
    )
}

// ---------------------------------------------------------------------------------------
// Wire shapes of Retell's answers. Retell sends null for many unset fields, so every field
// is optional here.

#[derive(Debug, Deserialize)]
pub struct WireEngine {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub llm_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireAnalysisItem {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    description: Option<String>,
    choices: Option<Vec<String>>,
    examples: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct WireAgent {
    pub agent_id: Option<String>,
    pub version: Option<i64>,
    pub last_modification_timestamp: Option<i64>,
    pub agent_name: Option<String>,
    pub voice_id: Option<String>,
    pub language: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_events: Option<Vec<String>>,
    pub response_engine: Option<WireEngine>,
    post_call_analysis_data: Option<Vec<WireAnalysisItem>>,
    pub post_call_analysis_model: Option<String>,
    pub max_call_duration_ms: Option<i64>,
    pub end_call_after_silence_ms: Option<i64>,
    pub data_storage_setting: Option<String>,
}

impl WireAgent {
    pub fn parse(body: &[u8]) -> Result<WireAgent, ProviderError> {
        serde_json::from_slice(body).map_err(|e| bad_body("agent", &e))
    }

    /// The Retell LLM behind the agent, when its response engine is one.
    pub fn llm_id(&self) -> Option<&str> {
        self.response_engine
            .as_ref()
            .filter(|e| e.kind.as_deref() == Some("retell-llm"))
            .and_then(|e| e.llm_id.as_deref())
            .filter(|id| !id.is_empty())
    }
}

#[derive(Debug, Deserialize)]
pub struct WireLlm {
    pub llm_id: Option<String>,
    pub version: Option<i64>,
    pub last_modification_timestamp: Option<i64>,
    pub is_published: Option<bool>,
    pub model: Option<String>,
    pub general_prompt: Option<String>,
    pub begin_message: Option<String>,
    pub model_temperature: Option<f64>,
    pub start_speaker: Option<String>,
    pub default_dynamic_variables: Option<HashMap<String, String>>,
    pub knowledge_base_ids: Option<Vec<String>>,
}

impl WireLlm {
    pub fn parse(body: &[u8]) -> Result<WireLlm, ProviderError> {
        serde_json::from_slice(body).map_err(|e| bad_body("Retell LLM", &e))
    }
}

fn llm_from_wire(llm: WireLlm) -> AgentLlm {
    // Version, publication and modification time belong to the agent in the port's model.
    let WireLlm {
        llm_id,
        version: _,
        last_modification_timestamp: _,
        is_published: _,
        model,
        general_prompt,
        begin_message,
        model_temperature,
        start_speaker,
        default_dynamic_variables,
        knowledge_base_ids,
    } = llm;
    let start_speaker = match start_speaker.as_deref() {
        Some("agent") => StartSpeaker::Agent,
        Some("user") => StartSpeaker::User,
        _ => StartSpeaker::Unspecified,
    };
    AgentLlm {
        llm_id: llm_id.unwrap_or_default(),
        model: model.unwrap_or_default(),
        general_prompt: general_prompt.unwrap_or_default(),
        begin_message: begin_message.unwrap_or_default(),
        temperature: model_temperature.map(|t| t as f32),
        start_speaker: start_speaker as i32,
        default_dynamic_variables: default_dynamic_variables.unwrap_or_default(),
        knowledge_base_ids: knowledge_base_ids.unwrap_or_default(),
    }
}

fn analysis_field_from_wire(item: WireAnalysisItem) -> AnalysisField {
    let WireAnalysisItem {
        kind,
        name,
        description,
        choices,
        examples,
    } = item;
    let kind = match kind.as_deref() {
        Some("string") => AnalysisFieldKind::String,
        Some("enum") => AnalysisFieldKind::Enum,
        Some("boolean") => AnalysisFieldKind::Boolean,
        Some("number") => AnalysisFieldKind::Number,
        _ => AnalysisFieldKind::Unspecified,
    };
    AnalysisField {
        name: name.unwrap_or_default(),
        kind: kind as i32,
        description: description.unwrap_or_default(),
        choices: choices.unwrap_or_default(),
        // Examples of number and boolean fields are values, not text: keep their JSON text.
        examples: examples
            .unwrap_or_default()
            .into_iter()
            .map(|e| match e {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
    }
}

/// The port's agent from Retell's agent and (when it uses one) its Retell LLM.
pub fn agent_from_wire(agent: WireAgent, llm: Option<WireLlm>) -> Agent {
    let WireAgent {
        agent_id,
        version,
        last_modification_timestamp,
        agent_name,
        voice_id,
        language,
        webhook_url,
        webhook_events,
        response_engine: _,
        post_call_analysis_data,
        post_call_analysis_model,
        max_call_duration_ms,
        end_call_after_silence_ms,
        data_storage_setting,
    } = agent;
    let data_storage_setting = match data_storage_setting.as_deref() {
        Some("everything") => DataStorageSetting::Everything,
        Some("everything_except_pii") => DataStorageSetting::EverythingExceptPii,
        Some("basic_attributes_only") => DataStorageSetting::BasicAttributesOnly,
        _ => DataStorageSetting::Unspecified,
    };
    Agent {
        agent_id: agent_id.unwrap_or_default(),
        agent_name: agent_name.unwrap_or_default(),
        voice_id: voice_id.unwrap_or_default(),
        language: language.unwrap_or_default(),
        webhook_url: webhook_url.unwrap_or_default(),
        webhook_events: webhook_events.unwrap_or_default(),
        llm: llm.map(llm_from_wire),
        post_call_analysis_fields: post_call_analysis_data
            .unwrap_or_default()
            .into_iter()
            .map(analysis_field_from_wire)
            .collect(),
        post_call_analysis_model: post_call_analysis_model.unwrap_or_default(),
        max_call_duration: max_call_duration_ms.map(from_ms),
        end_call_after_silence: end_call_after_silence_ms.map(from_ms),
        data_storage_setting: data_storage_setting as i32,
        version: version
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or_default(),
        update_time: last_modification_timestamp.map(timestamp_ms),
    }
}

// ---------------------------------------------------------------------------------------
// Calls

#[derive(Debug, Deserialize)]
struct WireWord {
    start: Option<f64>,
    end: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct WireTurn {
    role: Option<String>,
    content: Option<String>,
    words: Option<Vec<WireWord>>,
}

#[derive(Debug, Deserialize)]
struct WireCallAnalysis {
    call_summary: Option<String>,
    user_sentiment: Option<String>,
    call_successful: Option<bool>,
    in_voicemail: Option<bool>,
    custom_analysis_data: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct WireProductCost {
    product: Option<String>,
    cost: Option<Number>,
}

#[derive(Debug, Deserialize)]
struct WireCallCost {
    product_costs: Option<Vec<WireProductCost>>,
    combined_cost: Option<Number>,
    total_duration_seconds: Option<Number>,
}

#[derive(Debug, Deserialize)]
struct WireTelephony {
    twilio_call_sid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireCall {
    call_id: Option<String>,
    call_type: Option<String>,
    agent_id: Option<String>,
    agent_version: Option<i64>,
    call_status: Option<String>,
    direction: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    start_timestamp: Option<i64>,
    end_timestamp: Option<i64>,
    duration_ms: Option<i64>,
    disconnection_reason: Option<String>,
    transcript: Option<String>,
    transcript_object: Option<Vec<WireTurn>>,
    call_analysis: Option<WireCallAnalysis>,
    call_cost: Option<WireCallCost>,
    recording_url: Option<String>,
    metadata: Option<Map<String, Value>>,
    retell_llm_dynamic_variables: Option<Map<String, Value>>,
    telephony_identifier: Option<WireTelephony>,
}

fn cents(number: &Number) -> Result<Money, ProviderError> {
    money::from_minor_units(&number.to_string(), CENT_EXPONENT, CURRENCY)
        .map_err(|e| ProviderError::new(PROVIDER, ErrorKind::Provider, format!("call cost: {e}")))
}

fn seconds_to_offset(seconds: f64) -> prost_types::Duration {
    // Word timings are float seconds; the port keeps millisecond precision.
    from_ms((seconds * 1000.0).round() as i64)
}

fn turn_from_wire(turn: WireTurn) -> TranscriptTurn {
    let WireTurn {
        role,
        content,
        words,
    } = turn;
    let role = match role.as_deref() {
        Some("agent") => TranscriptRole::Agent,
        Some("user") => TranscriptRole::User,
        Some("transfer_target") => TranscriptRole::TransferTarget,
        _ => TranscriptRole::Unspecified,
    };
    let words = words.unwrap_or_default();
    // Only the first and last word's times matter to the port; the words themselves are in
    // `content` already.
    let start = words.first().and_then(|w| w.start);
    let end = words.last().and_then(|w| w.end);
    TranscriptTurn {
        role: role as i32,
        content: content.unwrap_or_default(),
        start_offset: start.map(seconds_to_offset),
        end_offset: end.map(seconds_to_offset),
    }
}

fn sentiment(text: Option<&str>) -> Sentiment {
    match text {
        Some("Positive") => Sentiment::Positive,
        Some("Neutral") => Sentiment::Neutral,
        Some("Negative") => Sentiment::Negative,
        Some("Unknown") => Sentiment::Unknown,
        _ => Sentiment::Unspecified,
    }
}

/// A boolean analysis field as the model wrote it: Retell's boolean fields are JSON booleans,
/// but a string field named so may say "true"/"yes".
fn truthy(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" => Some(true),
            "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn analysis_from_wire(analysis: WireCallAnalysis) -> CallAnalysis {
    let WireCallAnalysis {
        call_summary,
        user_sentiment,
        call_successful,
        in_voicemail,
        custom_analysis_data,
    } = analysis;
    let custom = custom_analysis_data.unwrap_or_default();
    CallAnalysis {
        summary: call_summary.unwrap_or_default(),
        sentiment: sentiment(user_sentiment.as_deref()) as i32,
        successful: call_successful,
        in_voicemail: in_voicemail.unwrap_or_default(),
        appointment_booked: custom.get(APPOINTMENT_BOOKED).and_then(truthy),
        custom_analysis: Some(maxai_kit::structs::object_to_struct(&custom)),
    }
}

fn call_status(text: Option<&str>) -> CallStatus {
    match text {
        Some("registered") => CallStatus::Registered,
        Some("not_connected") => CallStatus::NotConnected,
        Some("ongoing") => CallStatus::Ongoing,
        Some("ended") => CallStatus::Ended,
        Some("error") => CallStatus::Error,
        _ => CallStatus::Unspecified,
    }
}

/// Whole seconds of the call as Retell bills them.
fn billed_seconds(cost: Option<&WireCallCost>, duration_ms: Option<i64>) -> i64 {
    let from_cost = cost
        .and_then(|c| c.total_duration_seconds.as_ref())
        .and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|s| s.ceil() as i64)));
    from_cost.unwrap_or_else(|| (duration_ms.unwrap_or_default().max(0) + 999) / 1000)
}

fn usage(cost: Option<WireCallCost>, seconds: i64) -> Result<Usage, ProviderError> {
    let Some(cost) = cost else {
        return Ok(Usage {
            items: vec![UsageItem {
                meter: METER_CALL_SECONDS.to_owned(),
                quantity: seconds,
                cost: None,
            }],
            provider_cost: None,
        });
    };
    let WireCallCost {
        product_costs,
        combined_cost,
        // Already read by billed_seconds.
        total_duration_seconds: _,
    } = cost;
    let combined = combined_cost.as_ref().map(cents).transpose()?;
    let mut items = vec![UsageItem {
        meter: METER_CALL_SECONDS.to_owned(),
        quantity: seconds,
        cost: combined.clone(),
    }];
    for product in product_costs.unwrap_or_default() {
        // Unit prices are left unread: cost and seconds say the same exactly.
        let WireProductCost { product, cost } = product;
        // A breakdown of the call's seconds by what Retell charged for them.
        items.push(UsageItem {
            meter: format!("{METER_PRODUCT_PREFIX}{}", product.unwrap_or_default()),
            quantity: seconds,
            cost: cost.as_ref().map(cents).transpose()?,
        });
    }
    Ok(Usage {
        items,
        provider_cost: combined,
    })
}

/// Retell's call object (get-call or a webhook's `call`) as the port's answer.
pub fn call_from_json(body: &[u8]) -> Result<GetCallAnalysisResponse, ProviderError> {
    let call: WireCall = serde_json::from_slice(body).map_err(|e| bad_body("call", &e))?;
    let WireCall {
        call_id,
        call_type,
        agent_id,
        agent_version,
        call_status: status,
        direction,
        from_number,
        to_number,
        start_timestamp,
        end_timestamp,
        duration_ms,
        disconnection_reason,
        transcript,
        transcript_object,
        call_analysis,
        call_cost,
        recording_url,
        metadata,
        retell_llm_dynamic_variables,
        telephony_identifier,
    } = call;
    let status = call_status(status.as_deref());
    let finished = matches!(
        status,
        CallStatus::Ended | CallStatus::NotConnected | CallStatus::Error
    );
    let duration_ms = duration_ms.or(match (start_timestamp, end_timestamp) {
        (Some(s), Some(e)) if e >= s => Some(e - s),
        _ => None,
    });
    let cost = call_cost
        .as_ref()
        .and_then(|c| c.combined_cost.as_ref())
        .map(cents)
        .transpose()?;
    let usage = if finished {
        let seconds = billed_seconds(call_cost.as_ref(), duration_ms);
        Some(usage(call_cost, seconds)?)
    } else {
        None
    };
    let kind = match call_type.as_deref() {
        Some("phone_call") => CallKind::Phone,
        Some("web_call") => CallKind::Web,
        _ => CallKind::Unspecified,
    };
    let direction = match direction.as_deref() {
        Some("inbound") => CallDirection::Inbound,
        Some("outbound") => CallDirection::Outbound,
        _ => CallDirection::Unspecified,
    };
    Ok(GetCallAnalysisResponse {
        call_id: call_id.unwrap_or_default(),
        agent_id: agent_id.unwrap_or_default(),
        agent_version: agent_version
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or_default(),
        call_kind: kind as i32,
        call_status: status as i32,
        direction: direction as i32,
        from_number: from_number.unwrap_or_default(),
        to_number: to_number.unwrap_or_default(),
        start_time: start_timestamp.map(timestamp_ms),
        end_time: end_timestamp.map(timestamp_ms),
        duration: duration_ms.filter(|_| finished).map(from_ms),
        disconnection_reason: disconnection_reason.unwrap_or_default(),
        transcript: transcript.unwrap_or_default(),
        transcript_turns: transcript_object
            .unwrap_or_default()
            .into_iter()
            .map(turn_from_wire)
            .collect(),
        analysis: call_analysis.map(analysis_from_wire),
        cost,
        usage,
        recording_url: recording_url.unwrap_or_default(),
        metadata: metadata.map(|m| maxai_kit::structs::object_to_struct(&m)),
        dynamic_variables: retell_llm_dynamic_variables
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        twilio_call_sid: telephony_identifier
            .and_then(|t| t.twilio_call_sid)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_become_exact_dollars() {
        let n: Number = serde_json::from_str("11.6666667").expect("number");
        assert_eq!(
            cents(&n).expect("money"),
            Money {
                currency_code: "USD".into(),
                units: 0,
                nanos: 116_666_667
            }
        );
        let n: Number = serde_json::from_str("1250").expect("number");
        assert_eq!(cents(&n).expect("money").units, 12);
    }

    #[test]
    fn update_bodies_reset_emptied_fields_and_creates_leave_them_out() {
        let agent = Agent {
            voice_id: "11labs-Adrian".into(),
            ..Agent::default()
        };
        let create = agent_body(&agent, &AgentPath::ALL, Mode::Create);
        assert_eq!(Value::Object(create), json!({"voice_id": "11labs-Adrian"}));
        let update = agent_body(
            &agent,
            &[AgentPath::AgentName, AgentPath::MaxCallDuration],
            Mode::Update,
        );
        assert_eq!(
            Value::Object(update),
            json!({"agent_name": null, "max_call_duration_ms": null})
        );
        let llm = AgentLlm {
            temperature: Some(0.7),
            ..AgentLlm::default()
        };
        let body = llm_body(&llm, &[LlmPath::Temperature], Mode::Create);
        assert_eq!(body["model_temperature"].to_string(), "0.7");
    }

    #[test]
    fn mask_paths_are_parsed_and_unknown_ones_refused() {
        let mut v = Violations::new();
        let paths = Paths::parse(
            &[
                "agent_name".into(),
                "llm.general_prompt".into(),
                "agent_name".into(),
            ],
            &mut v,
        );
        assert!(v.is_empty());
        assert_eq!(paths.agent, vec![AgentPath::AgentName]);
        assert_eq!(paths.llm, vec![LlmPath::GeneralPrompt]);
        Paths::parse(&["llm.voice".into()], &mut v);
        assert_eq!(v.into_fields().len(), 1);
        assert_eq!(Paths::parse(&[], &mut Violations::new()), Paths::all());
    }
}
