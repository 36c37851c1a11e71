//! The orchestrator end to end on SQLite and — whenever reachable, always in CI — PostgreSQL:
//! the store conformance suite, the gRPC API (called on its tonic trait with a verified
//! principal in the request, as the guard leaves it), and the engine calling real fake ports
//! (tonic servers on 127.0.0.1:0) through the descriptor-driven dynamic client.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use maxai_kit::{auth::Principal, storage, CancellationToken};
use maxai_orchestrator::{
    api::OrchestratorApi,
    consumer::Consumer,
    convert::json_to_struct,
    domain::ExecState,
    engine::{Engine, PortCaller},
    schedule,
    store::{conformance, ExecutionRecord, OrchestratorStore, SqlStore},
    OrchestratorConfig, MIGRATIONS, STORAGE_NAME,
};
use maxai_proto::maxai::{
    common::v1::CanonicalEvent,
    orchestrator::v1::{self as pb, orchestrator_service_server::OrchestratorService},
    ports::{
        messaging::v1::{
            messaging_service_server::{MessagingService, MessagingServiceServer},
            GetMessageStatusRequest, GetMessageStatusResponse, MakeCallRequest, MakeCallResponse,
            SendSmsRequest, SendSmsResponse,
        },
        workflow::v1::{
            workflow_service_server::{WorkflowService, WorkflowServiceServer},
            CreateWorkflowRequest, CreateWorkflowResponse, ExecuteWorkflowRequest,
            ExecuteWorkflowResponse, GetExecutionStatusRequest, GetExecutionStatusResponse,
            UpdateWorkflowRequest, UpdateWorkflowResponse,
        },
    },
};
use maxai_testkit::{backends, Backend};
use serde_json::{json, Value};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

const SEND_SMS: &str = "maxai.ports.messaging.v1.MessagingService/SendSms";
const CONN: &str = "tenants/acme/clients/c1/connections/twilio";

// ---- fake ports -----------------------------------------------------------------------------

/// What the fake ports saw, and how they misbehave.
#[derive(Default)]
struct Fake {
    /// (to_number, idempotency key, connection) of every SendSms received.
    sms: Mutex<Vec<(String, String, String)>>,
    /// The first N SendSms calls fail UNAVAILABLE.
    fail_first: AtomicUsize,
    /// SendSms to this number fails INVALID_ARGUMENT.
    reject_to: Mutex<Option<String>>,
    /// SendSms to this number hangs until `release` is notified.
    block_to: Mutex<Option<String>>,
    release: tokio::sync::Notify,
    polls: AtomicUsize,
}

impl Fake {
    fn keys_for(&self, to: &str) -> Vec<String> {
        self.sms
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == to)
            .map(|(_, k, _)| k.clone())
            .collect()
    }
    fn all_keys(&self) -> Vec<String> {
        self.sms
            .lock()
            .unwrap()
            .iter()
            .map(|(_, k, _)| k.clone())
            .collect()
    }
}

#[derive(Clone)]
struct FakePorts(Arc<Fake>);

#[tonic::async_trait]
impl MessagingService for FakePorts {
    async fn send_sms(
        &self,
        req: Request<SendSmsRequest>,
    ) -> Result<Response<SendSmsResponse>, Status> {
        let r = req.into_inner();
        let ctx = r.context.clone().unwrap_or_default();
        self.0.sms.lock().unwrap().push((
            r.to_number.clone(),
            ctx.idempotency_key.clone(),
            ctx.connection.clone(),
        ));
        let blocked = self.0.block_to.lock().unwrap().clone();
        if blocked.as_deref() == Some(r.to_number.as_str()) {
            self.0.release.notified().await;
        }
        if self
            .0
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("twilio is down"));
        }
        if self.0.reject_to.lock().unwrap().as_deref() == Some(r.to_number.as_str()) {
            return Err(Status::invalid_argument("to_number is not a mobile number"));
        }
        Ok(Response::new(SendSmsResponse {
            sid: format!("SM-{}", ctx.idempotency_key),
            status: 1,
            segments: 1,
            price: None,
            usage: None,
            create_time: None,
        }))
    }
    async fn make_call(
        &self,
        _: Request<MakeCallRequest>,
    ) -> Result<Response<MakeCallResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn get_message_status(
        &self,
        _: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

#[tonic::async_trait]
impl WorkflowService for FakePorts {
    async fn create_workflow(
        &self,
        _: Request<CreateWorkflowRequest>,
    ) -> Result<Response<CreateWorkflowResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn update_workflow(
        &self,
        _: Request<UpdateWorkflowRequest>,
    ) -> Result<Response<UpdateWorkflowResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
    async fn execute_workflow(
        &self,
        req: Request<ExecuteWorkflowRequest>,
    ) -> Result<Response<ExecuteWorkflowResponse>, Status> {
        assert_eq!(req.get_ref().webhook_path, "lead-intake");
        Ok(Response::new(ExecuteWorkflowResponse {
            execution_id: "n8n-7".into(),
            status_code: 200,
            response: None,
        }))
    }
    async fn get_execution_status(
        &self,
        req: Request<GetExecutionStatusRequest>,
    ) -> Result<Response<GetExecutionStatusResponse>, Status> {
        assert_eq!(req.get_ref().execution_id, "n8n-7");
        let n = self.0.polls.fetch_add(1, Ordering::SeqCst) + 1;
        let finished = n >= 2;
        Ok(Response::new(GetExecutionStatusResponse {
            execution_id: "n8n-7".into(),
            workflow_id: "wf".into(),
            status: 0,
            finished,
            data: finished.then(|| json_to_struct(&json!({"score": 42}))),
            error_message: String::new(),
            start_time: None,
            stop_time: None,
            wait_time: None,
        }))
    }
}

async fn serve_fake(fake: Arc<Fake>, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ports = FakePorts(fake);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MessagingServiceServer::new(ports.clone()))
            .add_service(WorkflowServiceServer::new(ports))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

// ---- harness --------------------------------------------------------------------------------

struct H {
    store: Arc<dyn OrchestratorStore>,
    api: OrchestratorApi,
    consumer: Consumer,
    engine: Arc<Engine>,
    fake: Arc<Fake>,
    config: OrchestratorConfig,
    stop: CancellationToken,
    _backend: Backend,
}

impl Drop for H {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn test_config() -> OrchestratorConfig {
    OrchestratorConfig {
        lease_ms: 300,
        poll_ms: 10,
        default_step_timeout_ms: 3_000,
        ..OrchestratorConfig::default()
    }
}

async fn harness(backend: Backend) -> H {
    harness_with(backend, test_config()).await
}

async fn harness_with(backend: Backend, config: OrchestratorConfig) -> H {
    let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
        .await
        .expect("storage");
    let store: Arc<dyn OrchestratorStore> = Arc::new(SqlStore::new(db));
    let fake = Arc::new(Fake::default());
    let stop = CancellationToken::new();
    let url = serve_fake(fake.clone(), stop.clone()).await;
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect_lazy();
    let ports = PortCaller::new(
        channel,
        Arc::new(|| Some("service-token".to_owned())),
        4 << 20,
    );
    let engine = Engine::new(store.clone(), ports, config.clone());
    H {
        api: OrchestratorApi::new(store.clone(), engine.clone(), config.clone()),
        consumer: Consumer::new(store.clone(), engine.clone(), config.clone()),
        store,
        engine,
        fake,
        config,
        stop,
        _backend: backend,
    }
}

fn principal(tenant: &str) -> Principal {
    Principal {
        subject: format!("tenants/{tenant}/users/ann"),
        tenant: tenant.into(),
        token_id: "jti".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    }
}

fn req<T>(tenant: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(principal(tenant));
    r
}

fn flow_msg(name: &str, def: Value) -> pb::Flow {
    pb::Flow {
        name: String::new(),
        display_name: name.into(),
        description: String::new(),
        definition: Some(json_to_struct(&def)),
        schema_url: String::new(),
        draft_version: String::new(),
        active_version: String::new(),
        etag: String::new(),
        create_time: None,
        update_time: None,
    }
}

impl H {
    /// Creates and activates a flow; returns its name.
    async fn active_flow(&self, tenant: &str, id: &str, def: Value) -> String {
        let created = self
            .api
            .create_flow(req(
                tenant,
                pb::CreateFlowRequest {
                    parent: format!("tenants/{tenant}"),
                    flow: Some(flow_msg(id, def)),
                    flow_id: id.into(),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("create flow")
            .into_inner()
            .flow
            .unwrap();
        self.api
            .activate_flow_version(req(
                tenant,
                pb::ActivateFlowVersionRequest {
                    name: created.draft_version.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .expect("activate");
        created.name
    }

    async fn run(&self, tenant: &str, flow: &str, input: Value) -> String {
        self.api
            .run_flow(req(
                tenant,
                pb::RunFlowRequest {
                    name: flow.into(),
                    input: Some(json_to_struct(&input)),
                    flow_version: String::new(),
                    client: String::new(),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("run flow")
            .into_inner()
            .execution
            .unwrap()
            .name
    }

    async fn get(&self, tenant: &str, name: &str) -> pb::Execution {
        self.api
            .get_execution(req(tenant, pb::GetExecutionRequest { name: name.into() }))
            .await
            .expect("get execution")
            .into_inner()
            .execution
            .unwrap()
    }

    async fn record(&self, tenant: &str, name: &str) -> ExecutionRecord {
        let id = name.rsplit('/').next().unwrap();
        self.store.get_execution(tenant, id).await.unwrap().unwrap()
    }

    /// Drives the engine until the execution stops running (finished or waiting).
    async fn settle(&self, tenant: &str, name: &str) -> ExecutionRecord {
        for _ in 0..200 {
            self.engine.run_once("test-worker", 50).await.unwrap();
            let e = self.record(tenant, name).await;
            if e.state.is_finished() || e.state == ExecState::Waiting {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("execution {name} did not settle");
    }
}

fn out(e: &pb::Execution) -> Value {
    maxai_orchestrator::convert::struct_to_json(e.output.as_ref().expect("output"))
}

// ---- tests ----------------------------------------------------------------------------------

#[tokio::test]
async fn store_conformance_on_every_backend() {
    for backend in backends().await {
        let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
            .await
            .expect("storage");
        let store = SqlStore::new(db);
        conformance::run(&store).await;
        eprintln!("conformance passed on {}", backend.name);
    }
}

#[tokio::test]
async fn every_step_kind_runs_and_is_recorded() {
    for backend in backends().await {
        let h = harness(backend).await;
        let def = json!({
            "triggers": [{"id": "by-hand", "manual": {}}],
            "steps": [
                {"id": "init", "set": {"vars": {"greeting": "'Hi ' + input.name", "count": "size(input.phones)"}}},
                {"id": "big", "if": {"condition": "vars.count > 1", "then": "notify", "else": "single"}},
                {"id": "single", "fail": {"message": "expected several phones"}},
                {"id": "notify", "foreach": {"items": "input.phones", "concurrency": 2, "steps": [
                    {"id": "sms", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "item", "body": "vars.greeting + ' #' + string(index)"}}},
                    {"id": "mark", "set": {"vars": {"sid": "steps.sms.output.sid"}}}
                ]}},
                {"id": "route", "switch": {"cases": [
                    {"when": "size(steps.notify.output) == 0", "next": "empty"},
                    {"when": "size(steps.notify.output) == 2", "next": "pause"}
                ], "default": "empty"}},
                {"id": "empty", "fail": {"message": "nothing sent"}},
                {"id": "pause", "waitUntil": {"time": "'2020-01-01T00:00:00Z'"}},
                {"id": "final", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+15550000009'", "body": "'done'"}}}
            ],
            "output": {"sent": "size(steps.notify.output)", "last": "steps.final.output.sid", "greeting": "vars.greeting"}
        });
        let flow = h.active_flow("acme", "steps", def).await;
        let name = h
            .run(
                "acme",
                &flow,
                json!({"name": "Ada", "phones": ["+15550000001", "+15550000002"]}),
            )
            .await;
        let rec = h.settle("acme", &name).await;
        assert_eq!(rec.state, ExecState::Succeeded, "{:?}", rec.error);
        let e = h.get("acme", &name).await;
        assert_eq!(e.state, pb::ExecutionState::Succeeded as i32);
        let id = name.rsplit('/').next().unwrap();
        assert_eq!(
            out(&e),
            json!({"sent": 2, "last": format!("SM-{id}/final"), "greeting": "Hi Ada"})
        );
        // The port got the CEL-mapped input, the step's connection and per-iteration keys.
        let sms = h.fake.sms.lock().unwrap().clone();
        assert_eq!(sms.len(), 3);
        let mut keys: Vec<_> = sms.iter().map(|(_, k, _)| k.clone()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                format!("{id}/final"),
                format!("{id}/sms/0"),
                format!("{id}/sms/1")
            ]
        );
        assert!(sms.iter().all(|(_, _, c)| c == CONN));
        // History: every step attempt with kind, iteration path, method, input and output.
        let by_id: HashMap<String, Vec<&pb::StepRun>> =
            e.steps.iter().fold(HashMap::new(), |mut m, s| {
                m.entry(s.step_id.clone()).or_default().push(s);
                m
            });
        assert!(
            !by_id.contains_key("single") && !by_id.contains_key("empty"),
            "branches not taken do not run"
        );
        assert_eq!(by_id["big"][0].kind, pb::StepKind::Condition as i32);
        assert_eq!(by_id["notify"][0].kind, pb::StepKind::Loop as i32);
        assert_eq!(by_id["pause"][0].kind, pb::StepKind::Delay as i32);
        let sms_runs = &by_id["sms"];
        assert_eq!(sms_runs.len(), 2);
        let mut paths: Vec<_> = sms_runs.iter().map(|s| s.iteration_path.clone()).collect();
        paths.sort();
        assert_eq!(paths, [vec![0], vec![1]]);
        let first = sms_runs.iter().find(|s| s.iteration_path == [0]).unwrap();
        assert_eq!(first.method, SEND_SMS);
        assert_eq!(first.kind, pb::StepKind::PortCall as i32);
        let input = maxai_orchestrator::convert::struct_to_json(first.input.as_ref().unwrap());
        assert_eq!(
            input,
            json!({"toNumber": "+15550000001", "body": "Hi Ada #0"})
        );
        assert!(e
            .steps
            .iter()
            .all(|s| s.state == pb::StepRunState::Succeeded as i32));
    }
}

#[tokio::test]
async fn delays_sleep_in_the_database_and_resume() {
    for backend in backends().await {
        let h = harness(backend).await;
        let def = json!({"steps": [
            {"id": "wait", "delay": {"seconds": 1}},
            {"id": "after", "set": {"vars": {"done": "true"}}}
        ]});
        let flow = h.active_flow("acme", "delays", def).await;
        let name = h.run("acme", &flow, json!({})).await;
        let rec = h.settle("acme", &name).await;
        assert_eq!(rec.state, ExecState::Waiting);
        assert_eq!(rec.lease_owner, "", "a waiting execution holds no worker");
        let e = h.get("acme", &name).await;
        assert_eq!(e.steps[0].state, pb::StepRunState::Waiting as i32);
        assert!(e.steps[0].resume_time.is_some());
        // Nothing is runnable before the wake-up; after it, any worker resumes.
        assert_eq!(h.engine.run_once("other", 10).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        let rec = h.settle("acme", &name).await;
        assert_eq!(rec.state, ExecState::Succeeded);
        assert_eq!(rec.output, Some(json!({"done": true})));
        let e = h.get("acme", &name).await;
        assert_eq!(e.steps[0].state, pb::StepRunState::Succeeded as i32);
    }
}

#[tokio::test]
async fn cel_errors_fail_the_execution_with_a_reason_and_the_engine_goes_on() {
    for backend in backends().await {
        let h = harness(backend).await;
        let bad = json!({"steps": [
            {"id": "send", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "input.contact.phone"}}}
        ]});
        let good = json!({"steps": [{"id": "ok", "set": {"vars": {"x": "input.n + 1"}}}]});
        let bad_flow = h.active_flow("acme", "bad-data", bad).await;
        let good_flow = h.active_flow("acme", "good", good).await;
        let failing = h
            .run("acme", &bad_flow, json!({"contact": "not an object"}))
            .await;
        let fine = h.run("acme", &good_flow, json!({"n": 41})).await;
        let rec = h.settle("acme", &failing).await;
        assert_eq!(rec.state, ExecState::Failed);
        let e = h.get("acme", &failing).await;
        let err = e.error.unwrap();
        assert_eq!(err.step_id, "send");
        assert_eq!(
            err.reason,
            maxai_proto::maxai::common::v1::ErrorReason::InvalidArgument as i32
        );
        assert!(
            err.message.contains("call.input.toNumber"),
            "{}",
            err.message
        );
        assert!(h.fake.sms.lock().unwrap().is_empty(), "nothing was sent");
        let rec = h.settle("acme", &fine).await;
        assert_eq!(rec.state, ExecState::Succeeded);
        assert_eq!(rec.output, Some(json!({"x": 42})));
        // After a step whose end is written with the next boundary: both results are kept.
        let after_set = h
            .active_flow(
                "acme",
                "set-then-bad",
                json!({"steps": [
                    {"id": "pick", "set": {"vars": {"phone": "input.contact.phone"}}},
                    {"id": "send", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "vars.phone.number"}}}
                ]}),
            )
            .await;
        let failing = h
            .run(
                "acme",
                &after_set,
                json!({"contact": {"phone": "+15550000001"}}),
            )
            .await;
        assert_eq!(h.settle("acme", &failing).await.state, ExecState::Failed);
        let e = h.get("acme", &failing).await;
        let history: Vec<_> = e
            .steps
            .iter()
            .map(|s| (s.step_id.as_str(), s.state))
            .collect();
        assert_eq!(
            history,
            [
                ("pick", pb::StepRunState::Succeeded as i32),
                ("send", pb::StepRunState::Failed as i32)
            ]
        );
        assert!(e.error.unwrap().message.contains("call.input.toNumber"));
        // A condition that is not a bool is an error too, not truthiness.
        let cond = h
            .active_flow(
                "acme",
                "cond",
                json!({"steps": [
                    {"id": "c", "if": {"condition": "input.n", "then": "end"}},
                    {"id": "z", "set": {"vars": {"z": "1"}}}
                ]}),
            )
            .await;
        let n = h.run("acme", &cond, json!({"n": 1})).await;
        let rec = h.settle("acme", &n).await;
        assert_eq!(rec.state, ExecState::Failed);
        assert!(rec.error.unwrap().message.contains("bool"));
    }
}

#[tokio::test]
async fn retries_reuse_the_key_and_error_handlers_absorb_failures() {
    for backend in backends().await {
        let h = harness(backend).await;
        h.fake.fail_first.store(2, Ordering::SeqCst);
        let def = json!({"steps": [
            {"id": "send", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+15550000001'"}},
             "retry": {"maxAttempts": 3, "initialBackoffMs": 1, "maxBackoffMs": 5}}
        ]});
        let flow = h.active_flow("acme", "retry", def).await;
        let name = h.run("acme", &flow, json!({})).await;
        assert_eq!(h.settle("acme", &name).await.state, ExecState::Succeeded);
        let e = h.get("acme", &name).await;
        assert_eq!(
            e.steps.iter().map(|s| s.attempt).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            e.steps.iter().map(|s| s.state).collect::<Vec<_>>(),
            [
                pb::StepRunState::Failed as i32,
                pb::StepRunState::Failed as i32,
                pb::StepRunState::Succeeded as i32
            ]
        );
        let keys = h.fake.keys_for("+15550000001");
        assert_eq!(keys.len(), 3);
        assert!(
            keys.iter().all(|k| k == &keys[0]),
            "every attempt sends the same idempotency key"
        );

        // Not retryable (INVALID_ARGUMENT): one attempt, then the step's handler runs.
        *h.fake.reject_to.lock().unwrap() = Some("+15550000666".into());
        let def = json!({"steps": [
            {"id": "send", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+15550000666'"}},
             "retry": {"maxAttempts": 5}, "onError": "fallback", "next": "end"},
            {"id": "fallback", "set": {"vars": {"why": "error.message", "code": "error.code"}}}
        ]});
        let flow = h.active_flow("acme", "handled", def).await;
        let name = h.run("acme", &flow, json!({})).await;
        let rec = h.settle("acme", &name).await;
        assert_eq!(rec.state, ExecState::Succeeded);
        assert_eq!(
            rec.output,
            Some(json!({"why": "to_number is not a mobile number", "code": "INVALID_ARGUMENT"}))
        );
        let e = h.get("acme", &name).await;
        assert_eq!(e.steps.len(), 2);
        assert_eq!(e.steps[1].kind, pb::StepKind::ErrorHandler as i32);

        // The flow's handler runs once; if it fails, the execution fails with the error.
        let def = json!({"onError": "cleanup", "steps": [
            {"id": "boom", "fail": {"message": "bad lead", "reason": "INVALID_ARGUMENT"}},
            {"id": "cleanup", "fail": {"message": "cleanup also failed"}}
        ]});
        let flow = h.active_flow("acme", "flow-handler", def).await;
        let name = h.run("acme", &flow, json!({})).await;
        let rec = h.settle("acme", &name).await;
        assert_eq!(rec.state, ExecState::Failed);
        let err = rec.error.unwrap();
        assert_eq!(
            (err.step_id.as_str(), err.message.as_str()),
            ("cleanup", "cleanup also failed")
        );
        let e = h.get("acme", &name).await;
        assert_eq!(
            e.error.unwrap().reason,
            maxai_proto::maxai::common::v1::ErrorReason::PreconditionFailed as i32
        );
    }
}

#[tokio::test]
async fn a_killed_worker_resumes_elsewhere_without_duplicating_calls() {
    for backend in backends().await {
        // A lease long enough that "it still holds" is not a race on a loaded machine.
        let config = OrchestratorConfig {
            lease_ms: 1_000,
            ..test_config()
        };
        let h = harness_with(backend, config).await;
        let def = json!({"steps": [
            {"id": "one", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+1001'"}}},
            {"id": "two", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+1002'"}}},
            {"id": "three", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+1003'"}}}
        ]});
        let flow = h.active_flow("acme", "resume", def).await;
        *h.fake.block_to.lock().unwrap() = Some("+1002".into());
        let name = h.run("acme", &flow, json!({})).await;
        let worker = tokio::spawn(
            h.engine
                .clone()
                .worker("doomed".into(), CancellationToken::new()),
        );
        for _ in 0..300 {
            if !h.fake.keys_for("+1002").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            h.fake.keys_for("+1002").len(),
            1,
            "the worker reached step two"
        );
        // Kill it mid-call.
        worker.abort();
        let _ = worker.await;
        *h.fake.block_to.lock().unwrap() = None;
        h.fake.release.notify_waiters();
        assert_eq!(
            h.engine.run_once("rescuer", 10).await.unwrap(),
            0,
            "the lease still holds"
        );
        tokio::time::sleep(Duration::from_millis(h.config.lease_ms + 50)).await;
        let rec = h.settle("acme", &name).await;
        assert_eq!(rec.state, ExecState::Succeeded, "{:?}", rec.error);
        let id = name.rsplit('/').next().unwrap();
        assert_eq!(
            h.fake.keys_for("+1001"),
            [format!("{id}/one")],
            "a finished step is not sent again"
        );
        assert_eq!(
            h.fake.keys_for("+1002"),
            [format!("{id}/two"), format!("{id}/two")],
            "the interrupted step is resent with the same key"
        );
        assert_eq!(h.fake.keys_for("+1003").len(), 1);
        let e = h.get("acme", &name).await;
        let two: Vec<_> = e.steps.iter().filter(|s| s.step_id == "two").collect();
        assert_eq!(two.iter().map(|s| s.attempt).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            two[0].state,
            pb::StepRunState::Failed as i32,
            "the abandoned attempt is closed"
        );
        assert!(two[0].error.as_ref().unwrap().message.contains("abandoned"));
        assert_eq!(two[1].state, pb::StepRunState::Succeeded as i32);
    }
}

#[tokio::test]
async fn two_workers_never_run_the_same_step() {
    for backend in backends().await {
        let h = harness(backend).await;
        let def = json!({"steps": [
            {"id": "a", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+2001'"}}},
            {"id": "b", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+2002'"}}}
        ]});
        let flow = h.active_flow("acme", "race", def).await;
        let mut names = Vec::new();
        for _ in 0..16 {
            names.push(h.run("acme", &flow, json!({})).await);
        }
        let stop = CancellationToken::new();
        let w1 = tokio::spawn(h.engine.clone().worker("w1".into(), stop.clone()));
        let w2 = tokio::spawn(h.engine.clone().worker("w2".into(), stop.clone()));
        for _ in 0..500 {
            let list = h
                .store
                .list_executions("acme", &Default::default(), None, 100)
                .await
                .unwrap();
            if list.iter().all(|e| e.state.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        let _ = (w1.await, w2.await);
        let keys = h.fake.all_keys();
        assert_eq!(
            keys.len(),
            32,
            "each of 16 executions × 2 steps called exactly once"
        );
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), 32);
        for n in &names {
            let e = h.get("acme", n).await;
            assert_eq!(e.state, pb::ExecutionState::Succeeded as i32);
            assert!(e.steps.iter().all(|s| s.attempt == 1));
        }
    }
}

#[tokio::test]
async fn validation_reports_every_problem_with_its_path_and_saves_nothing() {
    for backend in backends().await {
        let h = harness(backend).await;
        // A document the schema refuses is not saved at all.
        let broken = json!({"steps": [{"id": "a"}, {"id": "b", "call": {"method": SEND_SMS, "input": {"toNumber": 5}}, "timeoutMs": "soon"}]});
        let err = h
            .api
            .create_flow(req(
                "acme",
                pb::CreateFlowRequest {
                    parent: "tenants/acme".into(),
                    flow: Some(flow_msg("Broken", broken)),
                    flow_id: "broken".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let fields: Vec<String> = err
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert!(
            fields.contains(&"flow.definition.steps[1].timeoutMs".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields.iter().any(|f| f == "flow.definition.steps[0]"),
            "{fields:?}"
        );
        let listed = h
            .api
            .list_flows(req(
                "acme",
                pb::ListFlowsRequest {
                    parent: "tenants/acme".into(),
                    page_size: 0,
                    page_token: String::new(),
                    active_only: false,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.flows.is_empty(), "nothing saved");

        // A well-formed draft with semantic problems is saved, reported, and cannot be activated.
        let wrong = json!({"triggers": [{"id": "t", "event": {"type": "voice.call.ended", "filter": "event.data.x >"}}],
        "steps": [
            {"id": "a", "call": {"method": "maxai.ports.messaging.v1.MessagingService/SendFax", "connection": "tenants/rival/clients/c/connections/t", "input": {}}},
            {"id": "b", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumbr": "'x'", "body": "vars.("}}, "next": "a"},
            {"id": "c", "if": {"condition": "true", "then": "nowhere"}},
            {"id": "d", "set": {"vars": {"x": "1"}}, "next": "end"},
            {"id": "e", "set": {"vars": {"y": "2"}}}
        ]});
        let created = h
            .api
            .create_flow(req(
                "acme",
                pb::CreateFlowRequest {
                    parent: "tenants/acme".into(),
                    flow: Some(flow_msg("Wrong", wrong)),
                    flow_id: "wrong".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .flow
            .unwrap();
        let report = h
            .api
            .validate_flow(req(
                "acme",
                pb::ValidateFlowRequest {
                    name: created.name.clone(),
                    definition: None,
                    schema_url: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!report.valid);
        let got: Vec<(String, String)> = report
            .violations
            .iter()
            .map(|v| (v.json_path.clone(), v.rule.clone()))
            .collect();
        for expected in [
            ("$.triggers[0].event.filter", "cel.compile"),
            ("$.steps[0].call.method", "port.unknown_method"),
            ("$.steps[0].call.connection", "port.foreign_connection"),
            ("$.steps[1].call.input.toNumbr", "port.unknown_field"),
            ("$.steps[1].call.input.body", "cel.compile"),
            ("$.steps[1].next", "step.cycle"),
            ("$.steps[2].if.then", "step.unknown_reference"),
            ("$.steps[4]", "step.unreachable"),
        ] {
            assert!(
                got.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "missing {expected:?} in {got:?}"
            );
        }
        let act = h
            .api
            .activate_flow_version(req(
                "acme",
                pb::ActivateFlowVersionRequest {
                    name: created.draft_version.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(act.code(), Code::FailedPrecondition);
        let fields: Vec<String> = act
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert!(
            fields.contains(&"definition.steps[1].call.input.toNumbr".to_owned()),
            "{fields:?}"
        );
        let flow = h
            .api
            .get_flow(req(
                "acme",
                pb::GetFlowRequest {
                    name: created.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .flow
            .unwrap();
        assert_eq!(flow.active_version, "", "nothing activated");
    }
}

#[tokio::test]
async fn versions_are_pinned_immutable_and_tenant_scoped() {
    for backend in backends().await {
        let h = harness(backend).await;
        let flow = h
            .active_flow(
                "acme",
                "pinned",
                json!({"steps": [{"id": "v", "set": {"vars": {"v": "1"}}}]}),
            )
            .await;
        let first = h.run("acme", &flow, json!({})).await;
        // Editing makes a new draft; the active version stays as it was.
        let current = h
            .api
            .get_flow(req("acme", pb::GetFlowRequest { name: flow.clone() }))
            .await
            .unwrap()
            .into_inner()
            .flow
            .unwrap();
        let mut edit = flow_msg(
            "Pinned",
            json!({"steps": [{"id": "v", "set": {"vars": {"v": "2"}}}]}),
        );
        edit.name = flow.clone();
        edit.etag = current.etag.clone();
        let updated = h
            .api
            .update_flow(req(
                "acme",
                pb::UpdateFlowRequest {
                    flow: Some(edit.clone()),
                    update_mask: None,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .flow
            .unwrap();
        assert_eq!(updated.draft_version, format!("{flow}/versions/2"));
        assert_eq!(updated.active_version, format!("{flow}/versions/1"));
        let stale = h
            .api
            .update_flow(req(
                "acme",
                pb::UpdateFlowRequest {
                    flow: Some(edit),
                    update_mask: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::Aborted, "a stale etag is refused");
        h.api
            .activate_flow_version(req(
                "acme",
                pb::ActivateFlowVersionRequest {
                    name: updated.draft_version.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .unwrap();
        let second = h.run("acme", &flow, json!({})).await;
        assert_eq!(
            h.settle("acme", &first).await.output,
            Some(json!({"v": 1})),
            "pinned to version 1"
        );
        assert_eq!(
            h.settle("acme", &second).await.output,
            Some(json!({"v": 2}))
        );
        let versions = h
            .api
            .list_flow_versions(req(
                "acme",
                pb::ListFlowVersionsRequest {
                    parent: flow.clone(),
                    page_size: 1,
                    page_token: String::new(),
                    state: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            versions.flow_versions[0].state,
            pb::FlowVersionState::Active as i32
        );
        let older = h
            .api
            .list_flow_versions(req(
                "acme",
                pb::ListFlowVersionsRequest {
                    parent: flow.clone(),
                    page_size: 1,
                    page_token: versions.next_page_token,
                    state: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            older.flow_versions[0].state,
            pb::FlowVersionState::Retired as i32
        );

        // Another tenant sees nothing.
        let other = h
            .api
            .get_flow(req("rival", pb::GetFlowRequest { name: flow.clone() }))
            .await
            .unwrap_err();
        assert_eq!(other.code(), Code::NotFound);
        let other = h
            .api
            .get_execution(req(
                "rival",
                pb::GetExecutionRequest {
                    name: first.clone(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(other.code(), Code::NotFound);
        let theirs = h
            .api
            .list_executions(req(
                "rival",
                pb::ListExecutionsRequest {
                    parent: "tenants/rival".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(theirs.executions.is_empty());
        let ours = h
            .api
            .list_executions(req(
                "acme",
                pb::ListExecutionsRequest {
                    parent: "tenants/acme".into(),
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ours.executions.len(), 1);
        assert!(
            ours.executions[0].steps.is_empty(),
            "lists leave step history out"
        );
        assert!(!ours.next_page_token.is_empty());
    }
}

#[tokio::test]
async fn cancel_rerun_and_limits() {
    for backend in backends().await {
        let h = harness(backend).await;
        let flow = h
            .active_flow(
                "acme",
                "slow",
                json!({"steps": [
                    {"id": "nap", "delay": {"seconds": 3600}},
                    {"id": "after", "set": {"vars": {"x": "1"}}}
                ]}),
            )
            .await;
        let name = h.run("acme", &flow, json!({"lead": 7})).await;
        assert_eq!(h.settle("acme", &name).await.state, ExecState::Waiting);
        let cancelled = h
            .api
            .cancel_execution(req(
                "acme",
                pb::CancelExecutionRequest {
                    name: name.clone(),
                    reason: "duplicate lead".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(cancelled.state, pb::ExecutionState::Cancelled as i32);
        assert!(cancelled.error.unwrap().message.contains("duplicate lead"));
        let again = h
            .api
            .cancel_execution(req(
                "acme",
                pb::CancelExecutionRequest {
                    name: name.clone(),
                    reason: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition);
        let rerun = h
            .api
            .rerun_execution(req(
                "acme",
                pb::RerunExecutionRequest {
                    name: name.clone(),
                    mode: pb::RerunMode::FromStart as i32,
                    use_active_version: false,
                    request_id: "rr-1".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(rerun.rerun_of, name);
        assert_eq!(
            maxai_orchestrator::convert::struct_to_json(rerun.input.as_ref().unwrap()),
            json!({"lead": 7})
        );
        let same = h
            .api
            .rerun_execution(req(
                "acme",
                pb::RerunExecutionRequest {
                    name: name.clone(),
                    mode: 0,
                    use_active_version: false,
                    request_id: "rr-1".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(same.name, rerun.name, "request ids make reruns idempotent");

        // Limits: ceilings refused; pending cap refuses RunFlow with RESOURCE_EXHAUSTED.
        let lim = |pending: i32| pb::ConcurrencyLimits {
            name: "tenants/acme/concurrencyLimits".into(),
            max_running_executions: 0,
            max_running_executions_per_flow: 0,
            max_running_executions_per_client: 0,
            max_pending_executions: pending,
            etag: String::new(),
            update_time: None,
        };
        let mut too_high = lim(1);
        too_high.max_running_executions = 1_000_000;
        let e = h
            .api
            .update_concurrency_limits(req(
                "acme",
                pb::UpdateConcurrencyLimitsRequest {
                    concurrency_limits: Some(too_high),
                    update_mask: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        h.api
            .update_concurrency_limits(req(
                "acme",
                pb::UpdateConcurrencyLimitsRequest {
                    concurrency_limits: Some(lim(1)),
                    update_mask: None,
                },
            ))
            .await
            .unwrap();
        let got = h
            .api
            .get_concurrency_limits(req(
                "acme",
                pb::GetConcurrencyLimitsRequest {
                    name: "tenants/acme/concurrencyLimits".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .concurrency_limits
            .unwrap();
        assert_eq!(got.max_pending_executions, 1);
        // The rerun is pending: one more is over the cap.
        let refused = h
            .api
            .run_flow(req(
                "acme",
                pb::RunFlowRequest {
                    name: flow.clone(),
                    input: None,
                    flow_version: String::new(),
                    client: String::new(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);

        // Delete refuses while executions live; force cancels them.
        let busy = h
            .api
            .delete_flow(req(
                "acme",
                pb::DeleteFlowRequest {
                    name: flow.clone(),
                    etag: String::new(),
                    force: false,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(busy.code(), Code::FailedPrecondition);
        h.api
            .delete_flow(req(
                "acme",
                pb::DeleteFlowRequest {
                    name: flow.clone(),
                    etag: String::new(),
                    force: true,
                },
            ))
            .await
            .unwrap();
        assert_eq!(
            h.get("acme", &rerun.name).await.state,
            pb::ExecutionState::Cancelled as i32
        );
    }
}

fn event(id: &str, tenant: &str, ty: &str, data: Value) -> CanonicalEvent {
    CanonicalEvent {
        id: id.into(),
        source: "maxai://providers/retell".into(),
        r#type: ty.into(),
        subject: "calls/call_1".into(),
        time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        data: Some(json_to_struct(&data)),
        spec_version: "1.0".into(),
        tenant: format!("tenants/{tenant}"),
        client: format!("tenants/{tenant}/clients/c1"),
        provider: "retell".into(),
        provider_event_id: id.into(),
        ordering_key: String::new(),
    }
}

#[tokio::test]
async fn events_start_matching_flows_once() {
    use maxai_proto::maxai::webhook::v1::{
        event_consumer_service_server::EventConsumerService, ConsumeEventRequest,
    };
    for backend in backends().await {
        let h = harness(backend).await;
        h.active_flow("acme", "long-calls", json!({
            "triggers": [{"id": "ended", "event": {"type": "voice.call.ended", "filter": "event.data.durationSeconds > 60"}}],
            "steps": [{"id": "s", "set": {"vars": {"call": "event.subject", "secs": "input.durationSeconds"}}}]
        })).await;
        h.active_flow(
            "rival",
            "theirs",
            json!({
                "triggers": [{"id": "ended", "event": {"type": "voice.call.ended"}}],
                "steps": [{"id": "s", "set": {"vars": {"x": "1"}}}]
            }),
        )
        .await;
        let consume = |e: CanonicalEvent| {
            req(
                "acme",
                ConsumeEventRequest {
                    event: Some(e),
                    attempt: 1,
                },
            )
        };
        let first = h
            .consumer
            .consume_event(consume(event(
                "ev-1",
                "acme",
                "voice.call.ended",
                json!({"durationSeconds": 95}),
            )))
            .await
            .unwrap()
            .into_inner();
        assert!(!first.duplicate);
        let again = h
            .consumer
            .consume_event(consume(event(
                "ev-1",
                "acme",
                "voice.call.ended",
                json!({"durationSeconds": 95}),
            )))
            .await
            .unwrap()
            .into_inner();
        assert!(
            again.duplicate,
            "a redelivery is reported and starts nothing"
        );
        h.consumer
            .consume_event(consume(event(
                "ev-2",
                "acme",
                "voice.call.ended",
                json!({"durationSeconds": 5}),
            )))
            .await
            .unwrap();
        h.consumer
            .consume_event(consume(event(
                "ev-3",
                "acme",
                "voice.call.started",
                json!({"durationSeconds": 500}),
            )))
            .await
            .unwrap();
        let list = h
            .store
            .list_executions("acme", &Default::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(
            list.len(),
            1,
            "only the matching type and filter started a flow"
        );
        assert!(
            h.store
                .list_executions("rival", &Default::default(), None, 100)
                .await
                .unwrap()
                .is_empty(),
            "events stay in their tenant"
        );
        let name = format!("tenants/acme/executions/{}", list[0].id);
        let rec = h.settle("acme", &name).await;
        assert_eq!(
            rec.output,
            Some(json!({"call": "calls/call_1", "secs": 95}))
        );
        let e = h.get("acme", &name).await;
        let t = e.trigger.unwrap();
        assert_eq!(
            (t.kind, t.event_id.as_str(), t.event.as_str()),
            (
                pb::TriggerKind::Event as i32,
                "ev-1",
                "tenants/acme/events/ev-1"
            )
        );
        assert_eq!(e.client, "tenants/acme/clients/c1");
        // Another tenant's caller cannot push events into acme.
        let denied = h
            .consumer
            .consume_event(req(
                "rival",
                ConsumeEventRequest {
                    event: Some(event("ev-9", "acme", "voice.call.ended", json!({}))),
                    attempt: 1,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::NotFound);
        let bad = h
            .consumer
            .consume_event(consume(event("", "acme", "voice.call.ended", json!({}))))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn schedules_fire_once_per_slot_with_their_missed_policy() {
    for backend in backends().await {
        let h = harness(backend).await;
        for (id, missed) in [("skipper", "skip"), ("catcher", "catch_up")] {
            h.active_flow("acme", id, json!({
                "triggers": [{"id": "hourly", "schedule": {"cron": "0 * * * *", "timeZone": "America/New_York", "missed": missed}}],
                "steps": [{"id": "s", "set": {"vars": {"at": "input.scheduleTime"}}}]
            })).await;
        }
        let triggers = h
            .api
            .list_triggers(req(
                "acme",
                pb::ListTriggersRequest {
                    parent: "tenants/acme".into(),
                    page_size: 0,
                    page_token: String::new(),
                    flow: String::new(),
                    kind: pb::TriggerKind::Schedule as i32,
                    event_type: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .triggers;
        assert_eq!(triggers.len(), 2);
        let next = maxai_kit::resource::micros(triggers[0].next_fire_time.as_ref().unwrap());
        assert_eq!(next % 3_600_000_000, 0, "on the hour");
        // Three slots later, two replicas tick at once.
        let now = next + 2 * 3_600_000_000 + 1;
        let store2 = h.store.clone();
        let (a, b) = tokio::join!(
            schedule::tick(h.store.as_ref(), now, &h.config),
            schedule::tick(store2.as_ref(), now, &h.config)
        );
        assert_eq!(
            a.unwrap() + b.unwrap(),
            1 + 3,
            "skip fires the latest slot, catch-up every slot, each once"
        );
        assert_eq!(
            schedule::tick(h.store.as_ref(), now, &h.config)
                .await
                .unwrap(),
            0,
            "nothing due twice"
        );
        let list = h
            .store
            .list_executions("acme", &Default::default(), None, 100)
            .await
            .unwrap();
        let catcher: Vec<_> = list.iter().filter(|e| e.flow_id == "catcher").collect();
        let skipper: Vec<_> = list.iter().filter(|e| e.flow_id == "skipper").collect();
        assert_eq!((catcher.len(), skipper.len()), (3, 1));
        let mut slots: Vec<i64> = catcher
            .iter()
            .map(|e| e.trigger.schedule_us.unwrap())
            .collect();
        slots.sort();
        assert_eq!(slots, [next, next + 3_600_000_000, next + 7_200_000_000]);
        assert_eq!(skipper[0].trigger.schedule_us, Some(next + 7_200_000_000));
        let after = h
            .api
            .list_triggers(req(
                "acme",
                pb::ListTriggersRequest {
                    parent: "tenants/acme".into(),
                    page_size: 0,
                    page_token: String::new(),
                    flow: String::new(),
                    kind: 0,
                    event_type: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .triggers;
        assert!(after.iter().all(|t| maxai_kit::resource::micros(
            t.next_fire_time.as_ref().unwrap()
        ) == next + 3 * 3_600_000_000));
    }
}

#[tokio::test]
async fn delegate_starts_n8n_and_waits_durably_for_the_result() {
    for backend in backends().await {
        let h = harness(backend).await;
        let flow = h.active_flow("acme", "delegated", json!({"steps": [
            {"id": "n8n", "delegate": {"connection": "tenants/acme/clients/c1/connections/n8n", "webhookPath": "lead-intake",
              "payload": {"lead": "input.lead"}, "pollIntervalSeconds": 1, "timeoutSeconds": 60}},
            {"id": "use", "set": {"vars": {"score": "steps.n8n.output.data.score"}}}
        ]})).await;
        let name = h.run("acme", &flow, json!({"lead": "l-1"})).await;
        assert_eq!(h.settle("acme", &name).await.state, ExecState::Waiting);
        let mut rec = h.record("acme", &name).await;
        for _ in 0..3 {
            if rec.state.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1_050)).await;
            rec = h.settle("acme", &name).await;
        }
        assert_eq!(rec.state, ExecState::Succeeded, "{:?}", rec.error);
        assert_eq!(rec.output, Some(json!({"score": 42})));
        assert_eq!(h.fake.polls.load(Ordering::SeqCst), 2);
        let e = h.get("acme", &name).await;
        assert!(e
            .steps
            .iter()
            .any(|s| s.kind == pb::StepKind::Delegate as i32
                && s.method.ends_with("ExecuteWorkflow")));
    }
}

#[tokio::test]
async fn a_one_tenant_burst_does_not_starve_other_tenants() {
    for backend in backends().await {
        let h = harness(backend).await;
        let def = json!({"steps": [{"id": "s", "set": {"vars": {"x": "1"}}}]});
        let big = h.active_flow("big", "f", def.clone()).await;
        let small = h.active_flow("small", "f", def).await;
        for _ in 0..20 {
            h.run("big", &big, json!({})).await;
        }
        let mine = [
            h.run("small", &small, json!({})).await,
            h.run("small", &small, json!({})).await,
        ];
        // One claim of four: the small tenant's two are in it although they came last.
        assert_eq!(h.engine.run_once("w", 4).await.unwrap(), 4);
        for n in &mine {
            assert_eq!(h.record("small", n).await.state, ExecState::Succeeded);
        }
        let done = h
            .store
            .list_executions("big", &Default::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(
            done.iter()
                .filter(|e| e.state == ExecState::Succeeded)
                .count(),
            2
        );
    }
}

#[tokio::test]
async fn rerun_from_the_failed_step_reuses_earlier_outputs() {
    for backend in backends().await {
        let h = harness(backend).await;
        *h.fake.reject_to.lock().unwrap() = Some("+3002".into());
        let flow = h.active_flow("acme", "two-sends", json!({
            "steps": [
                {"id": "one", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+3001'"}}},
                {"id": "two", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+3002'"}}}
            ],
            "output": {"first": "steps.one.output.sid", "second": "steps.two.output.sid"}
        })).await;
        let name = h.run("acme", &flow, json!({})).await;
        let failed = h.settle("acme", &name).await;
        assert_eq!(failed.state, ExecState::Failed);
        assert_eq!(failed.error.as_ref().unwrap().step_id, "two");
        *h.fake.reject_to.lock().unwrap() = None;
        let rerun = h
            .api
            .rerun_execution(req(
                "acme",
                pb::RerunExecutionRequest {
                    name: name.clone(),
                    mode: pb::RerunMode::FromFailedStep as i32,
                    use_active_version: false,
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        let done = h.settle("acme", &rerun.name).await;
        assert_eq!(done.state, ExecState::Succeeded, "{:?}", done.error);
        let old_id = name.rsplit('/').next().unwrap();
        let new_id = rerun.name.rsplit('/').next().unwrap();
        assert_eq!(
            done.output,
            Some(
                json!({"first": format!("SM-{old_id}/one"), "second": format!("SM-{new_id}/two")})
            )
        );
        assert_eq!(
            h.fake.keys_for("+3001").len(),
            1,
            "the step that succeeded is not run again"
        );
        let e = h.get("acme", &rerun.name).await;
        assert_eq!(
            e.steps
                .iter()
                .map(|s| s.step_id.as_str())
                .collect::<Vec<_>>(),
            ["two"]
        );
        // A running execution cannot be rerun; FROM_FAILED_STEP needs a failure.
        let ok = h.run("acme", &flow, json!({})).await;
        let bad = h
            .api
            .rerun_execution(req(
                "acme",
                pb::RerunExecutionRequest {
                    name: ok.clone(),
                    mode: 0,
                    use_active_version: false,
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::FailedPrecondition);
        h.settle("acme", &ok).await;
        let bad = h
            .api
            .rerun_execution(req(
                "acme",
                pb::RerunExecutionRequest {
                    name: ok,
                    mode: pb::RerunMode::FromFailedStep as i32,
                    use_active_version: false,
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::FailedPrecondition);
    }
}

#[tokio::test]
async fn served_over_grpc_behind_the_guard_with_background_workers() {
    use maxai_proto::maxai::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
    for backend in backends().await {
        let fake = Arc::new(Fake::default());
        let stop = CancellationToken::new();
        let url = serve_fake(fake.clone(), stop.clone()).await;
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect_lazy();
        let ports = PortCaller::new(channel, Arc::new(|| None), 4 << 20);
        let servers =
            maxai_orchestrator::start(&test_config(), &backend.storage, ports, stop.clone())
                .await
                .expect("start");
        let iam = maxai_testkit::TestIam::start(&backend).await;
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(servers.orchestrator);
        routes.add_service(servers.consumer);
        let running = maxai_testkit::serve_grpc(maxai_kit::server::GrpcApp {
            routes: routes.routes(),
            service_names: maxai_orchestrator::SERVICE_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            guard: iam.layer(),
        })
        .await;
        let mut client = OrchestratorServiceClient::new(
            maxai_testkit::authed(&running.url(), &iam.admin()).await,
        );
        let created = client
            .create_flow(pb::CreateFlowRequest {
                parent: "tenants/acme".into(),
                flow: Some(flow_msg("Served", json!({"steps": [
                    {"id": "hello", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "input.to"}}}
                ]}))),
                flow_id: "served".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .flow
            .unwrap();
        client
            .activate_flow_version(pb::ActivateFlowVersionRequest {
                name: created.draft_version,
                etag: String::new(),
            })
            .await
            .unwrap();
        let started = client
            .run_flow(pb::RunFlowRequest {
                name: created.name,
                input: Some(json_to_struct(&json!({"to": "+4001"}))),
                flow_version: String::new(),
                client: String::new(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(
            started.state,
            pb::ExecutionState::Pending as i32,
            "RunFlow answers before the run"
        );
        let mut state = 0;
        for _ in 0..300 {
            let e = client
                .get_execution(pb::GetExecutionRequest {
                    name: started.name.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .execution
                .unwrap();
            state = e.state;
            if state == pb::ExecutionState::Succeeded as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            state,
            pb::ExecutionState::Succeeded as i32,
            "the background workers ran it"
        );
        assert_eq!(fake.keys_for("+4001").len(), 1);
        // No token, no service.
        let channel = tonic::transport::Channel::from_shared(running.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let anonymous = OrchestratorServiceClient::new(channel)
            .get_flow(pb::GetFlowRequest {
                name: "tenants/acme/flows/served".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        stop.cancel();
        for t in servers.tasks {
            let _ = t.await;
        }
    }
}

#[tokio::test]
async fn a_skip_schedule_fires_only_the_latest_slot_after_a_long_outage() {
    for backend in backends().await {
        let h = harness(backend).await;
        h.active_flow("acme", "minutely", json!({
            "triggers": [{"id": "m", "schedule": {"cron": "* * * * *", "timeZone": "UTC", "missed": "skip"}}],
            "steps": [{"id": "s", "set": {"vars": {"at": "input.scheduleTime"}}}]
        }))
        .await;
        let trigger = |h: &H| {
            let store = h.store.clone();
            async move {
                store
                    .list_triggers("acme", &Default::default(), None, 10)
                    .await
                    .unwrap()
                    .remove(0)
            }
        };
        let first = trigger(&h).await.next_fire_us.unwrap();
        // A day down; then the scheduler ticks every second.
        let latest = first + 24 * 3_600_000_000;
        let now = latest + 30_000_000;
        let mut fired = 0;
        for i in 0..5 {
            fired += schedule::tick(h.store.as_ref(), now + i * 1_000_000, &h.config)
                .await
                .unwrap();
        }
        assert_eq!(fired, 1, "one execution for the whole outage");
        let list = h
            .store
            .list_executions("acme", &Default::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            list[0].trigger.schedule_us,
            Some(latest),
            "the latest due slot"
        );
        assert_eq!(
            trigger(&h).await.next_fire_us,
            Some(latest + 60_000_000),
            "the trigger moves past now"
        );
    }
}

#[tokio::test]
async fn shutdown_drains_to_a_step_boundary_and_hands_the_lease_back() {
    for backend in backends().await {
        // A 30 s lease: only a released lease lets another worker resume within the test.
        let config = OrchestratorConfig {
            lease_ms: 30_000,
            drain_ms: 1_000,
            ..test_config()
        };
        let h = harness_with(backend, config).await;
        let sms_count = |h: &H| h.fake.sms.lock().unwrap().len();
        let wait_for_sms = |h: &H, n: usize| {
            let fake = h.fake.clone();
            async move {
                for _ in 0..500 {
                    if fake.sms.lock().unwrap().len() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("no SendSms #{n}");
            }
        };
        *h.fake.block_to.lock().unwrap() = Some("+15550000001".into());
        let flow = h
            .active_flow("acme", "two-texts", json!({"steps": [
                {"id": "a", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+15550000001'", "body": "'one'"}}},
                {"id": "b", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+15550000002'", "body": "'two'"}}}
            ]}))
            .await;
        let stop = CancellationToken::new();
        let worker = tokio::spawn(h.engine.clone().worker("leaving".into(), stop.clone()));
        let name = h.run("acme", &flow, json!({})).await;
        wait_for_sms(&h, 1).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !worker.is_finished(),
            "the worker waits for the step in flight"
        );
        h.fake.release.notify_waiters();
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("drained within the grace")
            .unwrap();
        let rec = h.record("acme", &name).await;
        assert_eq!(
            (rec.state, rec.cursor.as_deref(), rec.lease_owner.as_str()),
            (ExecState::Running, Some("b"), ""),
            "stopped at the step boundary, lease handed back"
        );
        assert!(rec.ready_us <= storage::now_micros());
        assert_eq!(sms_count(&h), 1, "step b was not started while draining");
        // Another replica resumes at once, from step b.
        let done = h.settle("acme", &name).await;
        assert_eq!(done.state, ExecState::Succeeded, "{:?}", done.error);
        let to: Vec<String> = h
            .fake
            .sms
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect();
        assert_eq!(to, ["+15550000001", "+15550000002"], "nothing sent twice");

        // A step that outlasts the grace is stopped, and its lease released all the same.
        *h.fake.block_to.lock().unwrap() = Some("+15550000003".into());
        let stuck = h
            .active_flow("acme", "stuck", json!({"steps": [
                {"id": "a", "call": {"method": SEND_SMS, "connection": CONN, "input": {"toNumber": "'+15550000003'", "body": "'x'"}}}
            ]}))
            .await;
        let stop = CancellationToken::new();
        let worker = tokio::spawn(h.engine.clone().worker("leaving-2".into(), stop.clone()));
        let name = h.run("acme", &stuck, json!({})).await;
        wait_for_sms(&h, 3).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("the grace is bounded")
            .unwrap();
        let rec = h.record("acme", &name).await;
        assert_eq!(
            (rec.state, rec.lease_owner.as_str()),
            (ExecState::Running, "")
        );
        assert!(rec.ready_us <= storage::now_micros(), "claimable at once");
    }
}

#[tokio::test]
async fn the_delegate_status_poll_is_checked_against_the_tenant() {
    for backend in backends().await {
        let h = harness(backend).await;
        h.active_flow("acme", "delegated", json!({"steps": [
            {"id": "n8n", "delegate": {"connection": "tenants/acme/clients/c1/connections/n8n", "webhookPath": "lead-intake",
              "pollIntervalSeconds": 1, "timeoutSeconds": 60}}
        ]}))
        .await;
        // A stored wait naming another tenant's connection (the engine never writes one; the
        // poll must refuse it all the same).
        let mut forged = conformance::new_execution("forged", "acme", "delegated", "");
        forged.cursor = Some("n8n".into());
        forged.ctx = json!({"vars": {}, "steps": {}, "_wait": {
            "step": "n8n", "seq": 1, "kind": "delegate", "executionId": "n8n-7",
            "connection": "tenants/other/clients/c/connections/n8n",
            "deadline": i64::MAX, "poll": 1_000_000
        }});
        h.store
            .create_execution(&forged, None, 0, storage::now_micros())
            .await
            .unwrap();
        let rec = h.settle("acme", "tenants/acme/executions/forged").await;
        assert_eq!(rec.state, ExecState::Failed);
        assert_eq!(rec.error.unwrap().reason, "PERMISSION_DENIED");
        assert_eq!(
            h.fake.polls.load(Ordering::SeqCst),
            0,
            "nothing reached the port"
        );
    }
}

/// With Redis, work created on one replica wakes the idle workers of another at once: their
/// poll is a minute here, so only the announcement can start the execution in time.
#[tokio::test]
async fn work_created_on_one_replica_wakes_the_workers_of_another() {
    for backend in backends().await {
        let shared = maxai_kit::shared_state::SharedState::connect(&backend.storage)
            .await
            .expect("cache and notifier");
        if shared.backend != "redis" {
            continue;
        }
        let config = OrchestratorConfig {
            poll_ms: 60_000,
            ..test_config()
        };
        let h = harness_with(backend, config.clone()).await;
        let flow = h
            .active_flow(
                "acme",
                "wake",
                json!({"steps": [{"id": "a", "set": {"vars": {"x": "1"}}}]}),
            )
            .await;
        // Replica A serves the API and runs no workers; replica B (the harness's engine) runs
        // the workers.
        let idle_ports = PortCaller::new(
            tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy(),
            Arc::new(|| None),
            4 << 20,
        );
        let a = Engine::new(h.store.clone(), idle_ports, config.clone());
        let api_a = OrchestratorApi::new(h.store.clone(), a.clone(), config.clone());
        a.wake_across(shared.notifier.clone(), h.stop.clone())
            .await
            .expect("replica A subscribes");
        h.engine
            .wake_across(shared.notifier.clone(), h.stop.clone())
            .await
            .expect("replica B subscribes");
        let workers = h.engine.spawn_workers(h.stop.clone());
        // B's workers have made their first claim (nothing yet) and wait for a minute.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let name = api_a
            .run_flow(req(
                "acme",
                pb::RunFlowRequest {
                    name: flow.clone(),
                    input: Some(json_to_struct(&json!({}))),
                    flow_version: String::new(),
                    client: String::new(),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("run flow on replica A")
            .into_inner()
            .execution
            .unwrap()
            .name;
        let mut state = ExecState::Pending;
        for _ in 0..100 {
            state = h.record("acme", &name).await.state;
            if state.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state, ExecState::Succeeded, "B's workers were not woken");
        h.stop.cancel();
        for w in workers {
            let _ = w.await;
        }
    }
}
