//! Running one claimed execution from its cursor to its next stop.
use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::StreamExt;
use maxai_kit::{storage::now_micros, CancellationToken, Result};
use serde_json::{json, Map, Value};

use super::Engine;
use crate::{
    domain::{
        cel,
        flow::{Definition, Kind, Step, END},
        validate::resolve_method,
        ExecError, ExecState, StepKind, StepState,
    },
    store::{Checkpoint, ExecutionRecord, NewStepRun, StepEnd, StepWrite},
};

const WORKFLOW_EXECUTE: &str = "maxai.ports.workflow.v1.WorkflowService/ExecuteWorkflow";
const WORKFLOW_STATUS: &str = "maxai.ports.workflow.v1.WorkflowService/GetExecutionStatus";

/// How a step ended, for the execution loop.
enum Outcome {
    /// Go on with this step (`None`: the flow is done).
    Next(Option<String>),
    /// Sleep in the database until this time (UTC µs).
    Wait(i64),
    Fail(ExecError),
    /// The lease is gone (cancelled, or taken over after expiry): stop without writing.
    Lost,
}

/// How one attempt-bearing action ended.
enum Done {
    Ok(Value),
    Err(ExecError),
    Lost,
}

/// The stable idempotency key of a step (and loop iteration) of an execution: a resumed or
/// retried attempt sends the same key, so the port performs the operation once.
pub fn idempotency_key(execution_id: &str, step_id: &str, iteration: &[i32]) -> String {
    let mut key = format!("{execution_id}/{step_id}");
    for i in iteration {
        key.push_str(&format!("/{i}"));
    }
    key
}

fn engine_error(message: impl Into<String>, step_id: &str, details: Option<Value>) -> ExecError {
    ExecError {
        reason: "INTERNAL".into(),
        message: message.into(),
        step_id: step_id.into(),
        code: String::new(),
        details,
    }
}

/// A CEL evaluation error on this execution's data: not retryable, recorded with the expression path.
fn cel_error(step_id: &str, path: &str, e: String) -> ExecError {
    ExecError {
        reason: "INVALID_ARGUMENT".into(),
        message: format!("{path}: {e}"),
        step_id: step_id.into(),
        code: "INVALID_ARGUMENT".into(),
        details: Some(json!({"cel": e, "path": path})),
    }
}

struct Run<'a> {
    engine: &'a Engine,
    worker: &'a str,
    /// The worker is shutting down: stop at the next step boundary and hand the lease back.
    stop: &'a CancellationToken,
    exec: ExecutionRecord,
    def: Arc<Definition>,
    ctx: Map<String, Value>,
    handling: bool,
    /// Attempts already made per (step, iteration), from earlier workers.
    attempts: HashMap<(String, Vec<i32>), i64>,
    /// Outputs of foreach body steps that already succeeded, reused on resume.
    done: HashMap<(String, Vec<i32>), Value>,
    /// The last step's end not yet written: it goes into the same transaction as the step
    /// boundary that follows it (an instant step costs no commit of its own, a port call one).
    /// The boundary is written before the next step runs, so every result is durable first.
    pending: Mutex<Option<StepWrite>>,
    /// The boundary before the next step is owed: that step is a port call, and the boundary
    /// goes into the transaction that records the call's start. Any checkpoint pays it (it
    /// supersedes the owed one); so does [`Run::pay_owed`] on a path that writes otherwise.
    owed: AtomicBool,
}

impl Engine {
    pub(crate) async fn run_execution(
        &self,
        worker: &str,
        exec: ExecutionRecord,
        stop: &CancellationToken,
    ) {
        let id = exec.id.clone();
        if let Err(e) = self.drive(worker, exec, stop).await {
            // Storage trouble: the lease runs out and another attempt resumes from the last checkpoint.
            tracing::warn!(execution = %id, error = %e, "execution interrupted");
        }
    }

    async fn drive(
        &self,
        worker: &str,
        exec: ExecutionRecord,
        stop: &CancellationToken,
    ) -> Result<()> {
        let def = self
            .pinned_definition(&exec.tenant, &exec.flow_id, exec.version)
            .await?;
        let ctx = match &exec.ctx {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        let mut attempts: HashMap<(String, Vec<i32>), i64> = HashMap::new();
        let mut done = HashMap::new();
        // A claim sets `start_us` only when it is unset, to the claim's own time (which it also
        // writes to `update_us`), and a step run can only be started after a claim: an
        // execution whose start is this claim has no history to read.
        let fresh = exec.start_us == Some(exec.update_us);
        let history = if fresh {
            Vec::new()
        } else {
            self.store.step_runs(&exec.id).await?
        };
        for r in history {
            if r.state == StepState::Running {
                // Its worker died or lost the lease mid-step: close the attempt so the history
                // says what happened; the step runs again as the next attempt.
                let end = StepEnd {
                    state: StepState::Failed,
                    output: None,
                    error: Some(ExecError {
                        reason: "UNAVAILABLE".into(),
                        message: "abandoned: the worker running this attempt stopped".into(),
                        step_id: r.step_id.clone(),
                        code: "ABORTED".into(),
                        details: None,
                    }),
                    resume_us: None,
                };
                self.store
                    .finish_step(&exec.id, r.seq, &end, now_micros())
                    .await?;
            }
            let key = (r.step_id.clone(), r.iteration.clone());
            *attempts.entry(key.clone()).or_default() += 1;
            if r.state == StepState::Succeeded && !r.iteration.is_empty() {
                done.insert(key, r.output.clone().unwrap_or(Value::Null));
            }
        }
        let handling = exec.handling;
        let Some(def) = def else {
            let cp = Checkpoint {
                state: ExecState::Failed,
                cursor: None,
                ctx: Value::Object(ctx),
                handling,
                wake_us: None,
                output: None,
                error: Some(engine_error(
                    "the pinned flow version is missing or unreadable",
                    "",
                    None,
                )),
            };
            self.store
                .checkpoint(&exec.id, worker, &cp, now_micros(), self.lease_us())
                .await?;
            return Ok(());
        };
        let mut run = Run {
            engine: self,
            worker,
            stop,
            exec,
            def,
            ctx,
            handling,
            attempts,
            done,
            pending: Mutex::new(None),
            owed: AtomicBool::new(false),
        };
        run.go().await
    }
}

impl Run<'_> {
    fn lease_us(&self) -> i64 {
        self.engine.lease_us()
    }

    fn scope(&self) -> Value {
        json!({
            "event": self.ctx.get("event").cloned().unwrap_or(Value::Null),
            "input": self.exec.input,
            "steps": self.ctx.get("steps").cloned().unwrap_or_else(|| json!({})),
            "vars": self.ctx.get("vars").cloned().unwrap_or_else(|| json!({})),
            "error": self.ctx.get("error").cloned().unwrap_or(Value::Null),
        })
    }

    fn set_output(&mut self, step_id: &str, output: Value) {
        let steps = self.ctx.entry("steps").or_insert_with(|| json!({}));
        if let Value::Object(m) = steps {
            m.insert(step_id.to_owned(), json!({ "output": output }));
        }
    }

    fn merge_vars(&mut self, values: &Value) {
        let vars = self.ctx.entry("vars").or_insert_with(|| json!({}));
        if let (Value::Object(m), Value::Object(new)) = (vars, values) {
            for (k, v) in new {
                m.insert(k.clone(), v.clone());
            }
        }
    }

    /// Where control goes after step `idx` when it names no successor.
    fn successor(&self, idx: usize) -> Option<String> {
        let step = &self.def.steps[idx];
        match step.next.as_deref() {
            Some(END) => None,
            Some(n) => Some(n.to_owned()),
            None => self.def.steps.get(idx + 1).map(|s| s.id.clone()),
        }
    }

    fn target(&self, idx: usize, t: Option<&str>) -> Option<String> {
        match t {
            Some(END) => None,
            Some(n) => Some(n.to_owned()),
            None => self.successor(idx),
        }
    }

    async fn checkpoint(
        &self,
        state: ExecState,
        cursor: Option<String>,
        wake: Option<i64>,
        output: Option<Value>,
        error: Option<ExecError>,
    ) -> Result<bool> {
        let cp = self.boundary(state, cursor, wake, output, error);
        self.owed.store(false, Ordering::Relaxed);
        let pending = self.take_pending();
        let (store, id, worker) = (&self.engine.store, &self.exec.id, self.worker);
        let (now, lease_us) = (now_micros(), self.lease_us());
        let ok = match pending {
            None => store.checkpoint(id, worker, &cp, now, lease_us).await?,
            Some(before) => store
                .write_boundary(id, worker, Some(&before), &cp, None, now, lease_us)
                .await?
                .is_some(),
        };
        if ok && state.is_finished() {
            metrics::counter!(crate::metrics::EXECUTIONS_FINISHED_TOTAL, "state" => state.as_str())
                .increment(1);
        }
        Ok(ok)
    }

    fn boundary(
        &self,
        state: ExecState,
        cursor: Option<String>,
        wake_us: Option<i64>,
        output: Option<Value>,
        error: Option<ExecError>,
    ) -> Checkpoint {
        Checkpoint {
            state,
            cursor,
            ctx: Value::Object(self.ctx.clone()),
            handling: self.handling,
            wake_us,
            output,
            error,
        }
    }

    /// Writes the owed boundary before port call `step_id` on its own (the call will not
    /// start); `false` when the lease is lost.
    async fn pay_owed(&self, step_id: &str) -> Result<bool> {
        if !self.owed.load(Ordering::Relaxed) {
            return Ok(true);
        }
        self.checkpoint(
            ExecState::Running,
            Some(step_id.to_owned()),
            None,
            None,
            None,
        )
        .await
    }

    /// Records the start of a port call's attempt, with the owed boundary before it if any.
    async fn start_call(&self, run: &NewStepRun) -> Result<Option<i64>> {
        let (store, id, worker) = (&self.engine.store, &self.exec.id, self.worker);
        let (now, lease_us) = (now_micros(), self.lease_us());
        if !self.owed.swap(false, Ordering::Relaxed) {
            return store.start_step(id, worker, run, now, lease_us).await;
        }
        let cp = self.boundary(
            ExecState::Running,
            Some(run.step_id.clone()),
            None,
            None,
            None,
        );
        let before = self.take_pending();
        store
            .write_boundary(id, worker, before.as_ref(), &cp, Some(run), now, lease_us)
            .await
    }

    /// Whether step `step_id` is a port call (its boundary can be owed to its start).
    fn is_call(&self, step_id: Option<&str>) -> bool {
        step_id
            .and_then(|id| self.def.find(id))
            .is_some_and(|s| matches!(s.kind(), Some(Kind::Call(_))))
    }

    fn take_pending(&self) -> Option<StepWrite> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn defer(&self, p: StepWrite) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
    }

    /// Like [`record`](Self::record) for a top-level instant step, but written with the
    /// checkpoint that follows it.
    fn defer_record(&self, step_id: &str, kind: StepKind, end: StepEnd) {
        let run = self.instant_run(step_id, kind, &[], None);
        self.defer(StepWrite::Record(run, end));
    }

    /// The next attempt of a step that starts and ends at once.
    fn instant_run(
        &self,
        step_id: &str,
        kind: StepKind,
        iteration: &[i32],
        input: Option<Value>,
    ) -> NewStepRun {
        let attempt = self
            .attempts
            .get(&(step_id.to_owned(), iteration.to_vec()))
            .copied()
            .unwrap_or(0)
            + 1;
        NewStepRun {
            step_id: step_id.to_owned(),
            kind,
            attempt,
            iteration: iteration.to_vec(),
            method: String::new(),
            input,
        }
    }

    async fn go(&mut self) -> Result<()> {
        let mut cursor = self
            .exec
            .cursor
            .clone()
            .or_else(|| self.def.steps.first().map(|s| s.id.clone()));
        let mut via_error = false;
        let mut steps_run = 0u32;
        let mut resumed = match self.ctx.get("_wait").cloned() {
            Some(w) => Some(self.resume_wait(&w).await?),
            None => None,
        };
        loop {
            let (step_id, outcome) = match resumed.take() {
                Some(pair) => pair,
                None => {
                    let Some(step_id) = cursor.clone() else {
                        return self.finish().await;
                    };
                    steps_run += 1;
                    let outcome = if steps_run > self.engine.config.max_steps_per_execution {
                        Outcome::Fail(engine_error(
                            "the execution ran too many steps",
                            &step_id,
                            None,
                        ))
                    } else {
                        match self.def.index_of(&step_id) {
                            Some(idx) => self.run_step(idx, via_error).await?,
                            None => Outcome::Fail(engine_error(
                                format!("no step {step_id:?} in the pinned version"),
                                &step_id,
                                None,
                            )),
                        }
                    };
                    (step_id, outcome)
                }
            };
            match outcome {
                Outcome::Lost => return Ok(()),
                Outcome::Wait(wake) => {
                    self.checkpoint(ExecState::Waiting, Some(step_id), Some(wake), None, None)
                        .await?;
                    return Ok(());
                }
                Outcome::Next(next) => {
                    self.ctx.remove("_wait");
                    if next.is_none() {
                        // The last step: its result and the final state in one write.
                        return self.finish().await;
                    }
                    cursor = next;
                    via_error = false;
                    if !self.stop.is_cancelled() && self.is_call(cursor.as_deref()) {
                        // Written with the call's start, in one transaction.
                        self.owed.store(true, Ordering::Relaxed);
                        continue;
                    }
                    if !self
                        .checkpoint(ExecState::Running, cursor.clone(), None, None, None)
                        .await?
                    {
                        return Ok(());
                    }
                    if self.stop.is_cancelled() && cursor.is_some() {
                        // Checkpointed: another replica resumes from `cursor` right away.
                        self.engine
                            .store
                            .release_leases(self.worker, Some(&self.exec.id), now_micros())
                            .await?;
                        return Ok(());
                    }
                }
                Outcome::Fail(mut err) => {
                    self.ctx.remove("_wait");
                    if err.step_id.is_empty() {
                        err.step_id = step_id.clone();
                    }
                    let step_handler = self.def.find(&step_id).and_then(|s| s.on_error.clone());
                    let handler = match step_handler {
                        Some(h) => Some(h),
                        None if !self.handling => {
                            let h = self.def.on_error.clone();
                            self.handling = h.is_some();
                            h
                        }
                        None => None,
                    };
                    match handler {
                        Some(h) => {
                            self.ctx.insert(
                                "error".into(),
                                serde_json::to_value(&err).unwrap_or(Value::Null),
                            );
                            cursor = Some(h);
                            via_error = true;
                            if !self
                                .checkpoint(ExecState::Running, cursor.clone(), None, None, None)
                                .await?
                            {
                                return Ok(());
                            }
                        }
                        None => {
                            self.checkpoint(
                                ExecState::Failed,
                                Some(step_id),
                                None,
                                None,
                                Some(err),
                            )
                            .await?;
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    async fn finish(&mut self) -> Result<()> {
        let output = match &self.def.output {
            Some(m) => cel::eval_mapping(m, &self.scope())
                .map_err(|(p, e)| cel_error("", &format!("$.output.{p}"), e)),
            None => Ok(self.ctx.get("vars").cloned().unwrap_or_else(|| json!({}))),
        };
        match output {
            Ok(out) => {
                self.checkpoint(ExecState::Succeeded, None, None, Some(out), None)
                    .await?
            }
            Err(e) => {
                self.checkpoint(ExecState::Failed, None, None, None, Some(e))
                    .await?
            }
        };
        Ok(())
    }

    /// Records a step attempt that starts and ends at once (conditions, set, fail).
    async fn record(
        &self,
        step_id: &str,
        kind: StepKind,
        iteration: &[i32],
        input: Option<Value>,
        end: StepEnd,
    ) -> Result<Option<i64>> {
        let run = self.instant_run(step_id, kind, iteration, input);
        let store = &self.engine.store;
        let Some(seq) = store
            .start_step(
                &self.exec.id,
                self.worker,
                &run,
                now_micros(),
                self.lease_us(),
            )
            .await?
        else {
            return Ok(None);
        };
        store
            .finish_step(&self.exec.id, seq, &end, now_micros())
            .await?;
        Ok(Some(seq))
    }

    fn ok_end(output: Value) -> StepEnd {
        StepEnd {
            state: StepState::Succeeded,
            output: Some(output),
            error: None,
            resume_us: None,
        }
    }

    fn err_end(error: &ExecError) -> StepEnd {
        StepEnd {
            state: StepState::Failed,
            output: None,
            error: Some(error.clone()),
            resume_us: None,
        }
    }

    async fn run_step(&mut self, idx: usize, via_error: bool) -> Result<Outcome> {
        let step = self.def.steps[idx].clone();
        let scope = self.scope();
        let id = step.id.as_str();
        let as_kind = |k: StepKind| if via_error { StepKind::ErrorHandler } else { k };
        let Some(kind) = step.kind() else {
            return Ok(Outcome::Fail(engine_error(
                "the step has no kind",
                id,
                None,
            )));
        };
        Ok(match kind {
            Kind::Call(c) => {
                let input = match cel::eval_mapping(&c.input, &scope) {
                    Ok(v) => v,
                    Err((p, e)) => {
                        if !self.pay_owed(id).await? {
                            return Ok(Outcome::Lost);
                        }
                        let err = cel_error(id, &format!("call.input.{p}"), e);
                        return self
                            .recorded_fail(id, as_kind(StepKind::Call), &[], err)
                            .await;
                    }
                };
                let conn = c.connection.clone().unwrap_or_default();
                match self
                    .call_step(
                        &step,
                        &c.method,
                        &conn,
                        input,
                        &[],
                        as_kind(StepKind::Call),
                        true,
                    )
                    .await?
                {
                    Done::Ok(out) => {
                        self.set_output(id, out);
                        Outcome::Next(self.successor(idx))
                    }
                    Done::Err(e) => Outcome::Fail(e),
                    Done::Lost => Outcome::Lost,
                }
            }
            Kind::If(i) => match cel::eval_bool(&i.condition, &scope) {
                Ok(b) => {
                    let next = if b {
                        self.target(idx, Some(&i.then))
                    } else {
                        self.target(idx, i.otherwise.as_deref())
                    };
                    let out = json!({"result": b, "next": next.clone().unwrap_or_else(|| END.to_owned())});
                    self.defer_record(id, as_kind(StepKind::Condition), Self::ok_end(out.clone()));
                    self.set_output(id, out);
                    Outcome::Next(next)
                }
                Err(e) => {
                    self.recorded_fail(
                        id,
                        as_kind(StepKind::Condition),
                        &[],
                        cel_error(id, "if.condition", e),
                    )
                    .await?
                }
            },
            Kind::Switch(s) => {
                let mut chosen: Option<Option<String>> = None;
                let mut case_index = -1i64;
                for (n, c) in s.cases.iter().enumerate() {
                    match cel::eval_bool(&c.when, &scope) {
                        Ok(true) => {
                            chosen = Some(self.target(idx, Some(&c.next)));
                            case_index = n as i64;
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let err = cel_error(id, &format!("switch.cases[{n}].when"), e);
                            return self
                                .recorded_fail(id, as_kind(StepKind::Condition), &[], err)
                                .await;
                        }
                    }
                }
                let next = chosen.unwrap_or_else(|| self.target(idx, s.default.as_deref()));
                let out = json!({"case": case_index, "next": next.clone().unwrap_or_else(|| END.to_owned())});
                self.defer_record(id, as_kind(StepKind::Condition), Self::ok_end(out.clone()));
                self.set_output(id, out);
                Outcome::Next(next)
            }
            Kind::Set(s) => match cel::eval_mapping(&s.vars, &scope) {
                Ok(values) => {
                    self.defer_record(id, as_kind(StepKind::Set), Self::ok_end(values.clone()));
                    self.merge_vars(&values);
                    self.set_output(id, values);
                    Outcome::Next(self.successor(idx))
                }
                Err((p, e)) => {
                    self.recorded_fail(
                        id,
                        as_kind(StepKind::Set),
                        &[],
                        cel_error(id, &format!("set.vars.{p}"), e),
                    )
                    .await?
                }
            },
            Kind::Fail(f) => {
                let err = fail_error(id, f);
                self.recorded_fail(id, as_kind(StepKind::Fail), &[], err)
                    .await?
            }
            Kind::Foreach(f) => {
                self.foreach(idx, &step, f, &scope, as_kind(StepKind::Loop))
                    .await?
            }
            Kind::Delay(d) => {
                let wake =
                    now_micros().saturating_add((d.seconds as i64).saturating_mul(1_000_000));
                self.wait_step(
                    idx,
                    id,
                    as_kind(StepKind::Delay),
                    wake,
                    json!({"seconds": d.seconds}),
                )
                .await?
            }
            Kind::WaitUntil(w) => {
                let when = cel::eval(&w.time, &scope)
                    .and_then(|v| {
                        v.as_str()
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                            .map(|t| t.timestamp_micros())
                            .ok_or_else(|| "must evaluate to an RFC 3339 timestamp".to_owned())
                    })
                    .map_err(|e| cel_error(id, "waitUntil.time", e));
                match when {
                    Ok(wake) => {
                        self.wait_step(
                            idx,
                            id,
                            as_kind(StepKind::Delay),
                            wake,
                            json!({"until": wake}),
                        )
                        .await?
                    }
                    Err(e) => {
                        self.recorded_fail(id, as_kind(StepKind::Delay), &[], e)
                            .await?
                    }
                }
            }
            Kind::Delegate(d) => {
                let payload = match cel::eval_mapping(&d.payload, &scope) {
                    Ok(v) => v,
                    Err((p, e)) => {
                        let err = cel_error(id, &format!("delegate.payload.{p}"), e);
                        return self
                            .recorded_fail(id, as_kind(StepKind::Delegate), &[], err)
                            .await;
                    }
                };
                let input = json!({"webhookPath": d.webhook_path, "payload": payload});
                match self
                    .call_step(
                        &step,
                        WORKFLOW_EXECUTE,
                        &d.connection,
                        input,
                        &[],
                        as_kind(StepKind::Delegate),
                        false,
                    )
                    .await?
                {
                    Done::Lost => Outcome::Lost,
                    Done::Err(e) => Outcome::Fail(e),
                    Done::Ok(out) => {
                        let exec_id = out
                            .get("executionId")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        let finished_now = exec_id.is_empty();
                        if finished_now {
                            // The workflow answered synchronously: its response is the result.
                            self.set_output(id, json!({"response": out.get("response").cloned().unwrap_or(Value::Null)}));
                            Outcome::Next(self.successor(idx))
                        } else {
                            let now = now_micros();
                            let poll = d.poll_interval_seconds.unwrap_or(5) as i64 * 1_000_000;
                            let deadline =
                                now + d.timeout_seconds.unwrap_or(3600) as i64 * 1_000_000;
                            let wake = now + poll;
                            let run = NewStepRun {
                                step_id: id.to_owned(),
                                kind: as_kind(StepKind::Delegate),
                                attempt: 1,
                                iteration: Vec::new(),
                                method: WORKFLOW_STATUS.to_owned(),
                                input: Some(json!({"executionId": exec_id})),
                            };
                            let store = &self.engine.store;
                            let Some(seq) = store
                                .start_step(&self.exec.id, self.worker, &run, now, self.lease_us())
                                .await?
                            else {
                                return Ok(Outcome::Lost);
                            };
                            let end = StepEnd {
                                state: StepState::Waiting,
                                output: None,
                                error: None,
                                resume_us: Some(wake),
                            };
                            store.finish_step(&self.exec.id, seq, &end, now).await?;
                            self.ctx.insert(
                                "_wait".into(),
                                json!({"step": id, "seq": seq, "kind": "delegate", "executionId": exec_id,
                                       "connection": d.connection, "deadline": deadline, "poll": poll}),
                            );
                            Outcome::Wait(wake)
                        }
                    }
                }
            }
        })
    }

    async fn recorded_fail(
        &self,
        step_id: &str,
        kind: StepKind,
        iteration: &[i32],
        err: ExecError,
    ) -> Result<Outcome> {
        if iteration.is_empty() {
            // Followed by the failure's checkpoint (handler or FAILED), which writes it.
            self.defer_record(step_id, kind, Self::err_end(&err));
        } else if self
            .record(step_id, kind, iteration, None, Self::err_end(&err))
            .await?
            .is_none()
        {
            return Ok(Outcome::Lost);
        }
        Ok(Outcome::Fail(err))
    }

    async fn wait_step(
        &mut self,
        idx: usize,
        id: &str,
        kind: StepKind,
        wake: i64,
        input: Value,
    ) -> Result<Outcome> {
        let now = now_micros();
        if wake <= now {
            if self
                .record(id, kind, &[], Some(input), Self::ok_end(json!({})))
                .await?
                .is_none()
            {
                return Ok(Outcome::Lost);
            }
            return Ok(Outcome::Next(self.successor(idx)));
        }
        let end = StepEnd {
            state: StepState::Waiting,
            output: None,
            error: None,
            resume_us: Some(wake),
        };
        let Some(seq) = self.record(id, kind, &[], Some(input), end).await? else {
            return Ok(Outcome::Lost);
        };
        self.ctx.insert(
            "_wait".into(),
            json!({"step": id, "seq": seq, "kind": "delay"}),
        );
        Ok(Outcome::Wait(wake))
    }

    /// Picks up a waiting step after the wake-up.
    async fn resume_wait(&mut self, w: &Value) -> Result<(String, Outcome)> {
        let step_id = w
            .get("step")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let seq = w.get("seq").and_then(Value::as_i64).unwrap_or(0);
        let Some(idx) = self.def.index_of(&step_id) else {
            return Ok((
                step_id.clone(),
                Outcome::Fail(engine_error("the waiting step is gone", &step_id, None)),
            ));
        };
        let store = self.engine.store.clone();
        let now = now_micros();
        if w.get("kind").and_then(Value::as_str) != Some("delegate") {
            store
                .finish_step(&self.exec.id, seq, &Self::ok_end(json!({})), now)
                .await?;
            return Ok((step_id, Outcome::Next(self.successor(idx))));
        }
        let exec_id = w
            .get("executionId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let connection = w
            .get("connection")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let deadline = w.get("deadline").and_then(Value::as_i64).unwrap_or(now);
        let poll = w.get("poll").and_then(Value::as_i64).unwrap_or(5_000_000);
        let Some(method) = resolve_method(WORKFLOW_STATUS) else {
            return Ok((
                step_id.clone(),
                Outcome::Fail(engine_error(
                    "the workflow port is not in the contracts",
                    &step_id,
                    None,
                )),
            ));
        };
        let key = format!("{}:status", idempotency_key(&self.exec.id, &step_id, &[]));
        let timeout = Duration::from_millis(self.engine.config.default_step_timeout_ms);
        let input = json!({"executionId": exec_id, "includeData": true});
        let call = self.engine.ports.call(
            &self.exec.tenant,
            &method,
            &input,
            &connection,
            &key,
            timeout,
        );
        let Some(answer) = self.guarded(call).await? else {
            return Ok((step_id, Outcome::Lost));
        };
        let waiting_again = |wake: i64| StepEnd {
            state: StepState::Waiting,
            output: None,
            error: None,
            resume_us: Some(wake),
        };
        let outcome = match answer {
            Ok(status) if status.get("finished").and_then(Value::as_bool) == Some(true) => {
                let message = status
                    .get("errorMessage")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if message.is_empty() {
                    let out = json!({"executionId": exec_id, "data": status.get("data").cloned().unwrap_or(Value::Null)});
                    store
                        .finish_step(&self.exec.id, seq, &Self::ok_end(out.clone()), now)
                        .await?;
                    self.set_output(&step_id, out);
                    Outcome::Next(self.successor(idx))
                } else {
                    let err = ExecError {
                        reason: "PROVIDER_ERROR".into(),
                        message: message.to_owned(),
                        step_id: step_id.clone(),
                        code: String::new(),
                        details: Some(status.clone()),
                    };
                    store
                        .finish_step(&self.exec.id, seq, &Self::err_end(&err), now)
                        .await?;
                    Outcome::Fail(err)
                }
            }
            Err(e)
                if !self
                    .def
                    .find(&step_id)
                    .and_then(|s| s.retry.clone())
                    .unwrap_or_default()
                    .retryable(&e.code) =>
            {
                let mut e = e;
                e.step_id = step_id.clone();
                store
                    .finish_step(&self.exec.id, seq, &Self::err_end(&e), now)
                    .await?;
                Outcome::Fail(e)
            }
            _ if now >= deadline => {
                let err = ExecError {
                    reason: "TIMEOUT".into(),
                    message: "the delegated workflow did not finish in time".into(),
                    step_id: step_id.clone(),
                    code: "DEADLINE_EXCEEDED".into(),
                    details: None,
                };
                store
                    .finish_step(&self.exec.id, seq, &Self::err_end(&err), now)
                    .await?;
                Outcome::Fail(err)
            }
            _ => {
                let wake = (now + poll).min(deadline.max(now + 1));
                store
                    .finish_step(&self.exec.id, seq, &waiting_again(wake), now)
                    .await?;
                Outcome::Wait(wake)
            }
        };
        Ok((step_id, outcome))
    }

    /// Runs `fut` while renewing the lease; `None` when the lease was lost (the call is abandoned).
    async fn guarded<T>(&self, fut: impl Future<Output = T>) -> Result<Option<T>> {
        let every = Duration::from_millis((self.engine.config.lease_ms / 3).max(10));
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(Some(out)),
                _ = tokio::time::sleep(every) => {
                    if !self.engine.store.renew(&self.exec.id, self.worker, now_micros(), self.lease_us()).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// A port call with the step's retry policy and timeout; every attempt is a step run.
    #[allow(clippy::too_many_arguments)]
    async fn call_step(
        &self,
        step: &Step,
        method_name: &str,
        connection: &str,
        input: Value,
        iteration: &[i32],
        kind: StepKind,
        // The caller checkpoints right after (a top-level call): the attempt's end goes into
        // that checkpoint's transaction.
        defer: bool,
    ) -> Result<Done> {
        let Some(method) = resolve_method(method_name) else {
            if !self.pay_owed(&step.id).await? {
                return Ok(Done::Lost);
            }
            let err = engine_error(
                format!("no method {method_name:?} in the contracts"),
                &step.id,
                None,
            );
            self.record(&step.id, kind, iteration, Some(input), Self::err_end(&err))
                .await?;
            return Ok(Done::Err(err));
        };
        let retry = step.retry.clone().unwrap_or_default();
        let key = idempotency_key(&self.exec.id, &step.id, iteration);
        let prior = self
            .attempts
            .get(&(step.id.clone(), iteration.to_vec()))
            .copied()
            .unwrap_or(0);
        // A resumed step gets at least one attempt even if earlier workers used the budget up
        // (their last attempt may never have reached the port).
        let last = (retry.attempts() as i64).max(prior + 1);
        let timeout = Duration::from_millis(
            step.timeout_ms
                .unwrap_or(self.engine.config.default_step_timeout_ms),
        );
        let store = &self.engine.store;
        let mut attempt = prior + 1;
        loop {
            let run = NewStepRun {
                step_id: step.id.clone(),
                kind,
                attempt,
                iteration: iteration.to_vec(),
                method: method_name.to_owned(),
                input: Some(input.clone()),
            };
            let Some(seq) = self.start_call(&run).await? else {
                return Ok(Done::Lost);
            };
            let call = self.engine.ports.call(
                &self.exec.tenant,
                &method,
                &input,
                connection,
                &key,
                timeout,
            );
            let Some(answer) = self.guarded(call).await? else {
                return Ok(Done::Lost);
            };
            match answer {
                Ok(out) => {
                    let end = Self::ok_end(out.clone());
                    if defer {
                        self.defer(StepWrite::Finish(seq, end));
                    } else {
                        store
                            .finish_step(&self.exec.id, seq, &end, now_micros())
                            .await?;
                    }
                    return Ok(Done::Ok(out));
                }
                Err(mut e) => {
                    e.step_id = step.id.clone();
                    let last_attempt = attempt >= last || !retry.retryable(&e.code);
                    if defer && last_attempt {
                        self.defer(StepWrite::Finish(seq, Self::err_end(&e)));
                        return Ok(Done::Err(e));
                    }
                    store
                        .finish_step(&self.exec.id, seq, &Self::err_end(&e), now_micros())
                        .await?;
                    if last_attempt {
                        return Ok(Done::Err(e));
                    }
                    let wait = retry.backoff_ms(attempt as u32 + 1, rand::random::<f64>());
                    if self
                        .guarded(tokio::time::sleep(Duration::from_millis(wait)))
                        .await?
                        .is_none()
                    {
                        return Ok(Done::Lost);
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn foreach(
        &mut self,
        idx: usize,
        step: &Step,
        f: &crate::domain::flow::ForeachSpec,
        scope: &Value,
        kind: StepKind,
    ) -> Result<Outcome> {
        let id = step.id.as_str();
        let items = match cel::eval_list(&f.items, scope) {
            Ok(items) => items,
            Err(e) => {
                return self
                    .recorded_fail(id, kind, &[], cel_error(id, "foreach.items", e))
                    .await
            }
        };
        let attempt = self
            .attempts
            .get(&(id.to_owned(), Vec::new()))
            .copied()
            .unwrap_or(0)
            + 1;
        let run = NewStepRun {
            step_id: id.to_owned(),
            kind,
            attempt,
            iteration: Vec::new(),
            method: String::new(),
            input: Some(json!({"items": items.len()})),
        };
        let store = self.engine.store.clone();
        let Some(seq) = store
            .start_step(
                &self.exec.id,
                self.worker,
                &run,
                now_micros(),
                self.lease_us(),
            )
            .await?
        else {
            return Ok(Outcome::Lost);
        };
        let concurrency = f.concurrency.unwrap_or(1).max(1) as usize;
        let this: &Run<'_> = self;
        let results: Vec<Result<Done>> = futures::stream::iter(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| this.iteration(f, i as i32, item, scope)),
        )
        .buffered(concurrency)
        .collect()
        .await;
        let mut outputs = Vec::with_capacity(results.len());
        let mut failure = None;
        for r in results {
            match r? {
                Done::Ok(v) => outputs.push(v),
                Done::Lost => return Ok(Outcome::Lost),
                Done::Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(e) = failure {
            store
                .finish_step(&self.exec.id, seq, &Self::err_end(&e), now_micros())
                .await?;
            return Ok(Outcome::Fail(e));
        }
        let out = Value::Array(outputs);
        store
            .finish_step(&self.exec.id, seq, &Self::ok_end(out.clone()), now_micros())
            .await?;
        self.set_output(id, out);
        Ok(Outcome::Next(self.successor(idx)))
    }

    /// One foreach iteration: the body in order, with `item` and `index`; body steps that
    /// succeeded before (a resumed execution) are not run again. Its result is the output of
    /// its last body step.
    async fn iteration(
        &self,
        f: &crate::domain::flow::ForeachSpec,
        i: i32,
        item: Value,
        scope: &Value,
    ) -> Result<Done> {
        let mut local = scope.clone();
        if let Value::Object(m) = &mut local {
            m.insert("item".into(), item);
            m.insert("index".into(), json!(i));
        }
        let path = [i];
        let mut last = Value::Null;
        for body in &f.steps {
            let key = (body.id.clone(), path.to_vec());
            let out = if let Some(prev) = self.done.get(&key) {
                prev.clone()
            } else {
                match body.kind() {
                    Some(Kind::Call(c)) => {
                        let input = match cel::eval_mapping(&c.input, &local) {
                            Ok(v) => v,
                            Err((p, e)) => {
                                let err = cel_error(&body.id, &format!("call.input.{p}"), e);
                                self.record(
                                    &body.id,
                                    StepKind::Call,
                                    &path,
                                    None,
                                    Self::err_end(&err),
                                )
                                .await?;
                                return Ok(Done::Err(err));
                            }
                        };
                        let conn = c.connection.clone().unwrap_or_default();
                        match self
                            .call_step(body, &c.method, &conn, input, &path, StepKind::Call, false)
                            .await?
                        {
                            Done::Ok(v) => v,
                            other => return Ok(other),
                        }
                    }
                    Some(Kind::Set(s)) => match cel::eval_mapping(&s.vars, &local) {
                        Ok(v) => {
                            if self
                                .record(
                                    &body.id,
                                    StepKind::Set,
                                    &path,
                                    None,
                                    Self::ok_end(v.clone()),
                                )
                                .await?
                                .is_none()
                            {
                                return Ok(Done::Lost);
                            }
                            v
                        }
                        Err((p, e)) => {
                            let err = cel_error(&body.id, &format!("set.vars.{p}"), e);
                            self.record(&body.id, StepKind::Set, &path, None, Self::err_end(&err))
                                .await?;
                            return Ok(Done::Err(err));
                        }
                    },
                    Some(Kind::Fail(spec)) => {
                        let err = fail_error(&body.id, spec);
                        self.record(&body.id, StepKind::Fail, &path, None, Self::err_end(&err))
                            .await?;
                        return Ok(Done::Err(err));
                    }
                    _ => {
                        return Ok(Done::Err(engine_error(
                            "this step kind cannot run inside foreach",
                            &body.id,
                            None,
                        )))
                    }
                }
            };
            if body.set.is_some() {
                if let (Some(Value::Object(vars)), Value::Object(new)) =
                    (local.get_mut("vars"), &out)
                {
                    for (k, v) in new {
                        vars.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(Value::Object(steps)) = local.get_mut("steps") {
                steps.insert(body.id.clone(), json!({"output": out}));
            }
            last = out;
        }
        Ok(Done::Ok(last))
    }
}

fn fail_error(step_id: &str, f: &crate::domain::flow::FailSpec) -> ExecError {
    ExecError {
        reason: f
            .reason
            .clone()
            .unwrap_or_else(|| "PRECONDITION_FAILED".to_owned()),
        message: f
            .message
            .clone()
            .unwrap_or_else(|| "the flow failed".to_owned()),
        step_id: step_id.to_owned(),
        code: String::new(),
        details: None,
    }
}
