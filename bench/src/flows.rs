//! Flow executions, durable on PostgreSQL: canonical events go to the orchestrator over gRPC
//! (`EventConsumerService.ConsumeEvent`, behind the kit's guard as in production), each starts a
//! three-step flow — a CEL condition, `SendSms`, then `GetMessageStatus` of the sent message —
//! whose port calls go through the engine's descriptor-driven dynamic client to a tiny tonic
//! server that answers at once, so the figure is the orchestrator's own cost. The orchestrator
//! runs with the platform's `[orchestrator]` defaults (workers, slots, per-tenant and per-flow
//! caps) and its background workers; one tenant, one flow.
//!
//! Measuring choices:
//! - An execution is finished when the engine's final checkpoint (alone, or in one write with
//!   the last step's result) has committed. The store is
//!   wrapped ([`TimedStore`]) so that commit wakes the worker waiting for that event: latency is
//!   event sent → final state durable, with no polling in between, and the wrapper times every
//!   store call, which is where the breakdown in the row's note comes from (on 2 cores with no
//!   perf, a per-call timing of the storage round trips says more than a sampled profile).
//! - Every measured execution is checked: it must end SUCCEEDED, and each made both port calls.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use maxai_kit::{
    auth::{authed, Authed, Guard, GuardLayer},
    config::StorageConfig,
    server::{serve_grpc, GrpcApp},
    CancellationToken,
};
use maxai_orchestrator::{
    convert::json_to_struct,
    domain::{ExecState, VersionState},
    store::{
        Checkpoint, ClaimCaps, ExecutionFilter, ExecutionRecord, FlowRecord, Limits, LimitsRecord,
        NewExecution, NewStepRun, OrchestratorStore, SqlStore, StepEnd, StepRunRecord, StepWrite,
        TriggerFilter, TriggerRecord, VersionRecord,
    },
    OrchestratorConfig, PortCaller,
};
use maxai_proto::maxai::{
    common::v1::CanonicalEvent,
    orchestrator::v1::{self as pb, orchestrator_service_client::OrchestratorServiceClient},
    ports::messaging::v1::{
        messaging_service_server::{MessagingService, MessagingServiceServer},
        CallStatus, GetMessageStatusRequest, GetMessageStatusResponse, MakeCallRequest,
        MakeCallResponse, MessageStatus, SendSmsRequest, SendSmsResponse,
    },
    webhook::v1::{event_consumer_service_client::EventConsumerServiceClient, ConsumeEventRequest},
};
use serde_json::{json, Value};
use tokio::{runtime::Handle, sync::oneshot};
use tonic::{Request, Response, Status};

use crate::{
    baseline::spawn_server,
    load::{self, Load, Stats},
};

const TENANT: &str = "hooks";
const CLIENT: &str = "tenants/hooks/clients/shop";
const CONNECTION: &str = "tenants/hooks/clients/shop/connections/twilio";
const EVENT_TYPE: &str = "voice.call.ended";
const SEND_SMS: &str = "maxai.ports.messaging.v1.MessagingService/SendSms";
const GET_STATUS: &str = "maxai.ports.messaging.v1.MessagingService/GetMessageStatus";
/// Store calls the breakdown times, in the order the note lists them.
const OPS: [&str; 11] = [
    "list_triggers",
    "get_limits",
    "consume_event",
    "claim",
    "get_version",
    "step_runs",
    "start_step",
    "finish_step",
    "checkpoint",
    "renew",
    "write_boundary",
];
/// The ones that write (one transaction, so one commit, each).
const WRITES: [usize; 7] = [2, 3, 6, 7, 8, 9, 10];

/// The flow every event starts: the condition holds for the bench's calls (95 s long).
fn definition() -> Value {
    json!({
        "triggers": [{"id": "ended", "event": {"type": EVENT_TYPE, "filter": "event.data.durationSeconds > 0"}}],
        "steps": [
            {"id": "long", "if": {"condition": "input.durationSeconds > 60", "then": "text", "else": "end"}},
            {"id": "text", "call": {"method": SEND_SMS, "connection": CONNECTION, "input": {
                "toNumber": "input.fromNumber", "fromNumber": "'+15550001111'", "body": "'Thanks for calling!'"}}},
            {"id": "status", "call": {"method": GET_STATUS, "connection": CONNECTION, "input": {"sid": "steps.text.output.sid"}}}
        ],
        "output": {"sid": "steps.status.output.sid", "status": "steps.status.output.status"}
    })
}

// ---- the fake port ------------------------------------------------------------------------

/// Answers at once; counts what it was asked, so the bench can check every execution called it.
#[derive(Default)]
struct FakeMessaging {
    sms: AtomicU64,
    status: AtomicU64,
}

#[derive(Clone)]
struct FakePort(Arc<FakeMessaging>);

/// The idempotency key a port call carries (the engine's execution/step key).
fn key_of(context: Option<maxai_proto::maxai::common::v1::CallContext>) -> String {
    context.map(|c| c.idempotency_key).unwrap_or_default()
}

#[tonic::async_trait]
impl MessagingService for FakePort {
    async fn send_sms(
        &self,
        req: Request<SendSmsRequest>,
    ) -> Result<Response<SendSmsResponse>, Status> {
        self.0.sms.fetch_add(1, Ordering::Relaxed);
        let key = key_of(req.into_inner().context);
        Ok(Response::new(SendSmsResponse {
            sid: format!("SM-{key}"),
            status: MessageStatus::Queued as i32,
            segments: 1,
            price: None,
            usage: None,
            create_time: None,
        }))
    }

    /// The bench flow places no calls; answered as Twilio would for a new call, so the fake
    /// serves the whole port.
    async fn make_call(
        &self,
        req: Request<MakeCallRequest>,
    ) -> Result<Response<MakeCallResponse>, Status> {
        let key = key_of(req.into_inner().context);
        Ok(Response::new(MakeCallResponse {
            sid: format!("CA-{key}"),
            status: CallStatus::Queued as i32,
            usage: None,
            create_time: None,
        }))
    }

    async fn get_message_status(
        &self,
        req: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        self.0.status.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(GetMessageStatusResponse {
            sid: req.into_inner().sid,
            status: MessageStatus::Delivered as i32,
            ..Default::default()
        }))
    }
}

// ---- the timed store ----------------------------------------------------------------------

#[derive(Default)]
struct OpTimes {
    calls: [AtomicU64; OPS.len()],
    nanos: [AtomicU64; OPS.len()],
}

/// Calls and time per store operation over a span of the run.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    calls: [u64; OPS.len()],
    nanos: [u64; OPS.len()],
    pub finished: u64,
}

impl Breakdown {
    fn add(&mut self, other: &Breakdown) {
        for i in 0..OPS.len() {
            self.calls[i] += other.calls[i];
            self.nanos[i] += other.nanos[i];
        }
        self.finished += other.finished;
    }

    /// Write transactions per finished execution.
    pub fn writes_per_execution(&self) -> f64 {
        let writes: u64 = WRITES.iter().map(|&i| self.calls[i]).sum();
        writes as f64 / self.finished.max(1) as f64
    }

    /// `op ×calls-per-execution mean-ms`, for each store call made.
    pub fn describe(&self) -> String {
        let per = self.finished.max(1) as f64;
        let parts: Vec<String> = (0..OPS.len())
            .filter(|&i| self.calls[i] > 0)
            .map(|i| {
                format!(
                    "{} ×{:.2} {:.2} ms",
                    OPS[i],
                    self.calls[i] as f64 / per,
                    self.nanos[i] as f64 / self.calls[i] as f64 / 1e6
                )
            })
            .collect();
        let store_ms: f64 = self.nanos.iter().sum::<u64>() as f64 / per / 1e6;
        format!(
            "store calls per execution (count, mean time): {}; store time {store_ms:.2} ms per \
             execution; {:.1} write transactions per execution",
            parts.join(", "),
            self.writes_per_execution()
        )
    }
}

/// Waiting workers by event id; executions by id → their event, until they finish.
#[derive(Default)]
struct Finish {
    waiters: Mutex<HashMap<String, oneshot::Sender<Result<(), String>>>>,
    events: Mutex<HashMap<String, String>>,
}

/// The SQL store with every call forwarded; hot calls timed, finishing checkpoints announced.
pub struct TimedStore {
    inner: SqlStore,
    times: OpTimes,
    finished: AtomicU64,
    finish: Finish,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TimedStore {
    async fn timed<T>(&self, op: usize, fut: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = fut.await;
        self.times.calls[op].fetch_add(1, Ordering::Relaxed);
        self.times.nanos[op].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    fn snapshot(&self) -> Breakdown {
        let mut b = Breakdown {
            finished: self.finished.load(Ordering::Relaxed),
            ..Breakdown::default()
        };
        for i in 0..OPS.len() {
            b.calls[i] = self.times.calls[i].load(Ordering::Relaxed);
            b.nanos[i] = self.times.nanos[i].load(Ordering::Relaxed);
        }
        b
    }

    fn since(&self, earlier: &Breakdown) -> Breakdown {
        let now = self.snapshot();
        let mut d = Breakdown {
            finished: now.finished - earlier.finished,
            ..Breakdown::default()
        };
        for i in 0..OPS.len() {
            d.calls[i] = now.calls[i] - earlier.calls[i];
            d.nanos[i] = now.nanos[i] - earlier.nanos[i];
        }
        d
    }

    fn wait_for(&self, event_id: &str) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        locked(&self.finish.waiters).insert(event_id.to_owned(), tx);
        rx
    }

    /// A committed step boundary: announces the execution when it is its final state.
    fn checkpointed(&self, id: &str, cp: &Checkpoint) {
        if !cp.state.is_finished() {
            return;
        }
        let outcome = if cp.state == ExecState::Succeeded {
            Ok(())
        } else {
            Err(format!(
                "execution {id} ended {:?}: {:?}",
                cp.state,
                cp.error.as_ref().map(|e| &e.message)
            ))
        };
        self.finished(id, outcome);
    }

    fn finished(&self, execution_id: &str, outcome: Result<(), String>) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        let event = locked(&self.finish.events).remove(execution_id);
        if let Some(tx) = event.and_then(|e| locked(&self.finish.waiters).remove(&e)) {
            let _ = tx.send(outcome);
        }
    }
}

#[async_trait]
impl OrchestratorStore for TimedStore {
    async fn create_flow(
        &self,
        flow: &FlowRecord,
        definition: &Value,
        schema_url: &str,
        request_id: Option<&str>,
    ) -> maxai_kit::Result<FlowRecord> {
        self.inner
            .create_flow(flow, definition, schema_url, request_id)
            .await
    }
    async fn get_flow(&self, tenant: &str, flow_id: &str) -> maxai_kit::Result<Option<FlowRecord>> {
        self.inner.get_flow(tenant, flow_id).await
    }
    async fn list_flows(
        &self,
        tenant: &str,
        after: Option<(String, String)>,
        limit: i64,
        active_only: bool,
    ) -> maxai_kit::Result<Vec<FlowRecord>> {
        self.inner
            .list_flows(tenant, after, limit, active_only)
            .await
    }
    async fn update_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        expected_revision: Option<i64>,
        meta: Option<(String, String)>,
        definition: Option<(Value, String)>,
        now: i64,
    ) -> maxai_kit::Result<FlowRecord> {
        self.inner
            .update_flow(tenant, flow_id, expected_revision, meta, definition, now)
            .await
    }
    async fn delete_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        expected_revision: Option<i64>,
        force: bool,
        now: i64,
    ) -> maxai_kit::Result<()> {
        self.inner
            .delete_flow(tenant, flow_id, expected_revision, force, now)
            .await
    }
    async fn get_version(
        &self,
        tenant: &str,
        flow_id: &str,
        version: i64,
    ) -> maxai_kit::Result<Option<VersionRecord>> {
        self.timed(4, self.inner.get_version(tenant, flow_id, version))
            .await
    }
    async fn list_versions(
        &self,
        tenant: &str,
        flow_id: &str,
        before: Option<i64>,
        limit: i64,
        state: Option<VersionState>,
    ) -> maxai_kit::Result<Vec<VersionRecord>> {
        self.inner
            .list_versions(tenant, flow_id, before, limit, state)
            .await
    }
    async fn activate_version(
        &self,
        tenant: &str,
        flow_id: &str,
        version: i64,
        expected_revision: Option<i64>,
        by: &str,
        triggers: &[TriggerRecord],
        now: i64,
    ) -> maxai_kit::Result<VersionRecord> {
        self.inner
            .activate_version(
                tenant,
                flow_id,
                version,
                expected_revision,
                by,
                triggers,
                now,
            )
            .await
    }
    async fn list_triggers(
        &self,
        tenant: &str,
        filter: &TriggerFilter,
        after: Option<(String, String)>,
        limit: i64,
    ) -> maxai_kit::Result<Vec<TriggerRecord>> {
        self.timed(0, self.inner.list_triggers(tenant, filter, after, limit))
            .await
    }
    async fn due_schedules(&self, now: i64, limit: i64) -> maxai_kit::Result<Vec<TriggerRecord>> {
        self.inner.due_schedules(now, limit).await
    }
    async fn create_execution(
        &self,
        new: &NewExecution,
        request_id: Option<&str>,
        max_pending: i64,
        now: i64,
    ) -> maxai_kit::Result<(ExecutionRecord, bool)> {
        self.inner
            .create_execution(new, request_id, max_pending, now)
            .await
    }
    async fn get_execution(
        &self,
        tenant: &str,
        id: &str,
    ) -> maxai_kit::Result<Option<ExecutionRecord>> {
        self.inner.get_execution(tenant, id).await
    }
    async fn list_executions(
        &self,
        tenant: &str,
        filter: &ExecutionFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> maxai_kit::Result<Vec<ExecutionRecord>> {
        self.inner
            .list_executions(tenant, filter, after, limit)
            .await
    }
    async fn step_runs(&self, execution_id: &str) -> maxai_kit::Result<Vec<StepRunRecord>> {
        self.timed(5, self.inner.step_runs(execution_id)).await
    }
    async fn cancel_execution(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
        now: i64,
    ) -> maxai_kit::Result<ExecutionRecord> {
        self.inner.cancel_execution(tenant, id, reason, now).await
    }
    async fn claim(
        &self,
        worker: &str,
        now: i64,
        lease_us: i64,
        max: i64,
        caps: ClaimCaps,
    ) -> maxai_kit::Result<Vec<ExecutionRecord>> {
        self.timed(3, self.inner.claim(worker, now, lease_us, max, caps))
            .await
    }
    async fn renew(
        &self,
        id: &str,
        worker: &str,
        now: i64,
        lease_us: i64,
    ) -> maxai_kit::Result<bool> {
        self.timed(9, self.inner.renew(id, worker, now, lease_us))
            .await
    }
    async fn checkpoint(
        &self,
        id: &str,
        worker: &str,
        cp: &Checkpoint,
        now: i64,
        lease_us: i64,
    ) -> maxai_kit::Result<bool> {
        let written = self
            .timed(8, self.inner.checkpoint(id, worker, cp, now, lease_us))
            .await;
        if matches!(written, Ok(true)) {
            self.checkpointed(id, cp);
        }
        written
    }
    async fn write_boundary(
        &self,
        id: &str,
        worker: &str,
        before: Option<&StepWrite>,
        cp: &Checkpoint,
        start: Option<&NewStepRun>,
        now: i64,
        lease_us: i64,
    ) -> maxai_kit::Result<Option<i64>> {
        let written = self
            .timed(
                10,
                self.inner
                    .write_boundary(id, worker, before, cp, start, now, lease_us),
            )
            .await;
        if matches!(written, Ok(Some(_))) {
            self.checkpointed(id, cp);
        }
        written
    }
    async fn start_step(
        &self,
        id: &str,
        worker: &str,
        run: &NewStepRun,
        now: i64,
        lease_us: i64,
    ) -> maxai_kit::Result<Option<i64>> {
        self.timed(6, self.inner.start_step(id, worker, run, now, lease_us))
            .await
    }
    async fn finish_step(
        &self,
        id: &str,
        seq: i64,
        end: &StepEnd,
        now: i64,
    ) -> maxai_kit::Result<()> {
        self.timed(7, self.inner.finish_step(id, seq, end, now))
            .await
    }
    async fn get_limits(&self, tenant: &str) -> maxai_kit::Result<Option<LimitsRecord>> {
        self.timed(1, self.inner.get_limits(tenant)).await
    }
    async fn put_limits(
        &self,
        tenant: &str,
        limits: Limits,
        expected_revision: Option<i64>,
        now: i64,
    ) -> maxai_kit::Result<LimitsRecord> {
        self.inner
            .put_limits(tenant, limits, expected_revision, now)
            .await
    }
    async fn consume_event(
        &self,
        source: &str,
        event_id: &str,
        tenant: &str,
        executions: &[NewExecution],
        max_pending: i64,
        now: i64,
    ) -> maxai_kit::Result<Option<Vec<String>>> {
        // Known before the commit: a worker may claim and finish the execution before this
        // call returns.
        {
            let mut events = locked(&self.finish.events);
            for e in executions {
                events.insert(e.id.clone(), e.trigger.event_id.clone());
            }
        }
        self.timed(
            2,
            self.inner
                .consume_event(source, event_id, tenant, executions, max_pending, now),
        )
        .await
    }
    async fn fire_schedule(
        &self,
        trigger: &TriggerRecord,
        slot_us: i64,
        next_fire_us: Option<i64>,
        execution: Option<&NewExecution>,
        now: i64,
    ) -> maxai_kit::Result<bool> {
        self.inner
            .fire_schedule(trigger, slot_us, next_fire_us, execution, now)
            .await
    }
}

// ---- the orchestrator under load ------------------------------------------------------------

/// The orchestrator with its workers on PostgreSQL, its gRPC server behind the guard, and the
/// fake port it calls.
pub struct Flows {
    pub addr: SocketAddr,
    store: Arc<TimedStore>,
    port: Arc<FakeMessaging>,
    run: String,
    next: AtomicU64,
    /// Store breakdown accumulated per in-flight level (the measurements that ran with it).
    breakdowns: Mutex<HashMap<usize, Breakdown>>,
    pub config: OrchestratorConfig,
}

impl Flows {
    /// Starts everything on the server runtime, creates and activates the flow (over gRPC with
    /// `token`), and checks that one event runs it to SUCCEEDED with both port calls made.
    pub async fn start(
        sut: &Handle,
        config: &OrchestratorConfig,
        storage: StorageConfig,
        guard: Arc<Guard>,
        max_message: usize,
        token: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<Flows>> {
        let port = Arc::new(FakeMessaging::default());
        let fake = MessagingServiceServer::new(FakePort(port.clone()));
        let fake_stop = stop.clone();
        let port_addr = spawn_server(sut, move |l| async move {
            tonic::transport::Server::builder()
                .add_service(fake)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true)),
                    fake_stop.cancelled_owned(),
                )
                .await?;
            Ok(())
        })
        .await?;
        let (orch_config, worker_stop, service_token) =
            (config.clone(), stop.clone(), token.to_owned());
        // On the server runtime: the workers, the scheduler and the port channel are spawned
        // where this runs.
        let (servers, store) = sut
            .spawn(async move {
                let db = maxai_kit::storage::connect(
                    &storage,
                    maxai_orchestrator::STORAGE_NAME,
                    &maxai_orchestrator::MIGRATIONS,
                )
                .await?;
                let store = Arc::new(TimedStore {
                    inner: SqlStore::new(db),
                    times: OpTimes::default(),
                    finished: AtomicU64::new(0),
                    finish: Finish::default(),
                });
                let channel = load::endpoint(port_addr)?.connect_lazy();
                let ports = PortCaller::new(
                    channel,
                    Arc::new(move || Some(service_token.clone())),
                    max_message,
                );
                let servers = maxai_orchestrator::start_with_store(
                    &orch_config,
                    store.clone(),
                    ports,
                    worker_stop,
                    true,
                );
                anyhow::Ok((servers, store))
            })
            .await??;
        let (orchestrator, consumer) = (servers.orchestrator, servers.consumer);
        let addr = spawn_server(sut, move |l| async move {
            let mut routes = tonic::service::RoutesBuilder::default();
            routes.add_service(orchestrator);
            routes.add_service(consumer);
            let app = GrpcApp {
                routes: routes.routes(),
                service_names: maxai_orchestrator::SERVICE_NAMES.map(String::from).to_vec(),
                guard: GuardLayer::new(guard, max_message),
            };
            serve_grpc(l, app, stop, Duration::ZERO).await
        })
        .await?;
        let mut run = uuid::Uuid::new_v4().simple().to_string();
        run.truncate(12);
        let flows = Arc::new(Flows {
            addr,
            store,
            port,
            run,
            next: AtomicU64::new(0),
            breakdowns: Mutex::new(HashMap::new()),
            config: config.clone(),
        });
        flows.create_flow(token).await?;
        flows.check(token).await?;
        Ok(flows)
    }

    async fn create_flow(&self, token: &str) -> anyhow::Result<()> {
        let channel = load::endpoint(self.addr)?.connect().await?;
        let mut client = OrchestratorServiceClient::new(authed(channel, token)?);
        let created = client
            .create_flow(pb::CreateFlowRequest {
                parent: format!("tenants/{TENANT}"),
                flow: Some(pb::Flow {
                    display_name: "Thank long callers".into(),
                    definition: Some(json_to_struct(&definition())),
                    ..Default::default()
                }),
                flow_id: "thank-callers".into(),
                request_id: String::new(),
            })
            .await
            .context("CreateFlow")?
            .into_inner()
            .flow
            .context("CreateFlow answered no flow")?;
        client
            .activate_flow_version(pb::ActivateFlowVersionRequest {
                name: created.draft_version,
                etag: String::new(),
            })
            .await
            .context("ActivateFlowVersion")?;
        Ok(())
    }

    /// One event end to end, read back over the API: SUCCEEDED, three steps, the port's answer
    /// in the output.
    async fn check(&self, token: &str) -> anyhow::Result<()> {
        let channel = load::endpoint(self.addr)?.connect().await?;
        let mut consumer = EventConsumerServiceClient::new(authed(channel.clone(), token)?);
        let calls_before = self.port_calls();
        self.one(&mut consumer).await.context("the first event")?;
        let calls = self.port_calls() - calls_before;
        anyhow::ensure!(calls == 2, "one execution made {calls} port calls, not 2");
        let mut api = OrchestratorServiceClient::new(authed(channel, token)?);
        let list = api
            .list_executions(pb::ListExecutionsRequest {
                parent: format!("tenants/{TENANT}"),
                page_size: 10,
                ..Default::default()
            })
            .await
            .context("ListExecutions")?
            .into_inner();
        let e = list
            .executions
            .first()
            .context("no execution listed after the first event")?;
        let e = api
            .get_execution(pb::GetExecutionRequest {
                name: e.name.clone(),
            })
            .await
            .context("GetExecution")?
            .into_inner()
            .execution
            .context("GetExecution answered none")?;
        let output = e
            .output
            .as_ref()
            .map(maxai_orchestrator::convert::struct_to_json);
        anyhow::ensure!(
            e.state == pb::ExecutionState::Succeeded as i32
                && e.steps.len() == 3
                && output
                    .as_ref()
                    .and_then(|o| o.get("status"))
                    .and_then(Value::as_str)
                    == Some("MESSAGE_STATUS_DELIVERED"),
            "the first execution: state {}, {} steps, output {output:?}",
            e.state,
            e.steps.len()
        );
        Ok(())
    }

    fn port_calls(&self) -> u64 {
        self.port.sms.load(Ordering::Relaxed) + self.port.status.load(Ordering::Relaxed)
    }

    fn event(&self) -> CanonicalEvent {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("call-{}-{n:010}", self.run);
        let now = chrono::Utc::now();
        CanonicalEvent {
            id: id.clone(),
            source: "maxai://providers/retell".into(),
            r#type: EVENT_TYPE.into(),
            subject: format!("calls/{id}"),
            time: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: now.timestamp_subsec_nanos() as i32,
            }),
            data: Some(json_to_struct(&json!({
                "durationSeconds": 95,
                "fromNumber": format!("+1555{:07}", n % 10_000_000),
            }))),
            spec_version: "1.0".into(),
            tenant: format!("tenants/{TENANT}"),
            client: CLIENT.into(),
            provider: "retell".into(),
            provider_event_id: id,
            ordering_key: String::new(),
        }
    }

    /// One event: ConsumeEvent, then wait for its execution's final checkpoint.
    async fn one(&self, client: &mut EventConsumerServiceClient<Authed>) -> anyhow::Result<()> {
        let event = self.event();
        let done = self.store.wait_for(&event.id);
        let reply = client
            .consume_event(ConsumeEventRequest {
                event: Some(event),
                attempt: 1,
            })
            .await?
            .into_inner();
        anyhow::ensure!(!reply.duplicate, "a new event was reported a duplicate");
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => anyhow::bail!(why),
            Err(_) => anyhow::bail!("the execution's waiter was dropped"),
        }
    }

    pub fn breakdown(&self, in_flight: usize) -> Option<Breakdown> {
        locked(&self.breakdowns).get(&in_flight).cloned()
    }
}

/// `concurrency` events in flight over `channels` connections, each waited for to the end.
pub async fn load_flows(
    load: Load,
    flows: Arc<Flows>,
    token: &str,
    concurrency: usize,
    channels: usize,
) -> anyhow::Result<Stats> {
    let chans = load::channels(flows.addr, channels).await?;
    let mut states = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let client =
            EventConsumerServiceClient::new(authed(chans[i % chans.len()].clone(), token)?);
        states.push((client, flows.clone()));
    }
    let (calls_before, before) = (flows.port_calls(), flows.store.snapshot());
    let op = |(mut client, flows): (EventConsumerServiceClient<Authed>, Arc<Flows>)| async move {
        flows.one(&mut client).await?;
        Ok((client, flows))
    };
    let stats = load::closed_loop(load, states, op).await;
    let span = flows.store.since(&before);
    let calls = flows.port_calls() - calls_before;
    anyhow::ensure!(
        stats.errors > 0 || calls == 2 * span.finished,
        "{} executions finished but the port got {calls} calls, not 2 each",
        span.finished
    );
    locked(&flows.breakdowns)
        .entry(concurrency)
        .or_default()
        .add(&span);
    Ok(stats)
}
