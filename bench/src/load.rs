//! A closed-loop load generator: each worker keeps exactly one request in flight, so a figure
//! is what the server sustains at that concurrency rather than a rate we impose. Every loop is
//! bounded by a deadline, a per-request timeout and a maximum count, and stops by itself.
use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::cpu::{CpuShare, Sample};

/// A request that has not answered in this long counts as an error and ends its worker.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Far above what 2 cores reach in a measurement; only a guard against a runaway loop.
const MAX_OPS_PER_WORKER: u64 = 5_000_000;

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one measurement saw after the warm-up, or several rounds of it combined.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub first_error: Option<String>,
    /// Over the measured part (not the warm-up).
    pub cpu: Option<CpuShare>,
    /// Throughput of each round, in the order they ran.
    pub round_rates: Vec<f64>,
    /// Sorted; kept so rounds can be combined into one distribution.
    latencies_ns: Vec<u64>,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    fn with_latencies(mut self, mut latencies_ns: Vec<u64>) -> Self {
        latencies_ns.sort_unstable();
        let pct = |p: f64| {
            let i = ((latencies_ns.len() as f64 * p) as usize)
                .min(latencies_ns.len().saturating_sub(1));
            latencies_ns.get(i).map_or(0.0, |ns| *ns as f64 / 1e6)
        };
        self.p50_ms = pct(0.50);
        self.p99_ms = pct(0.99);
        self.latencies_ns = latencies_ns;
        self
    }

    /// Rounds pooled: throughput over their summed time, percentiles over every request, CPU
    /// shares weighted by duration.
    pub fn combine(rounds: Vec<Stats>) -> Stats {
        let secs: f64 = rounds.iter().map(|r| r.secs).sum();
        let cpu = rounds
            .iter()
            .map(|r| r.cpu.map(|c| (c, r.secs)))
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty() && secs > 0.0)
            .map(|v| {
                let avg =
                    |f: fn(&CpuShare) -> f64| v.iter().map(|(c, s)| f(c) * s).sum::<f64>() / secs;
                CpuShare {
                    servers: avg(|c| c.servers),
                    load_tool: avg(|c| c.load_tool),
                    others: avg(|c| c.others),
                }
            });
        let combined = Stats {
            ops: rounds.iter().map(|r| r.ops).sum(),
            errors: rounds.iter().map(|r| r.errors).sum(),
            secs,
            first_error: rounds.iter().find_map(|r| r.first_error.clone()),
            cpu,
            round_rates: rounds.iter().map(Stats::rate).collect(),
            ..Stats::default()
        };
        let all = rounds.into_iter().flat_map(|r| r.latencies_ns).collect();
        combined.with_latencies(all)
    }

    /// (fastest − slowest round) / median round: how far apart repeated rounds landed.
    pub fn spread(&self) -> Option<f64> {
        let mut r = self.round_rates.clone();
        r.sort_by(f64::total_cmp);
        let median = *r.get(r.len() / 2)?;
        (r.len() > 1 && median > 0.0).then(|| (r[r.len() - 1] - r[0]) / median)
    }
}

struct WorkerResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    finished: Instant,
}

/// Runs one worker per state. `op` takes the state by value and gives it back, so a worker can
/// own a connection without borrowing across an await; an error ends that worker (its state,
/// e.g. a broken connection, is gone) and is reported.
pub async fn closed_loop<S, F, Fut>(load: Load, states: Vec<S>, op: F) -> Stats
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<S>> + Send + 'static,
{
    let warm_end = Instant::now() + load.warmup;
    let end = warm_end + load.duration;
    let workers: Vec<_> = states
        .into_iter()
        .map(|state| tokio::spawn(worker(state, op.clone(), warm_end, end)))
        .collect();
    tokio::time::sleep_until(warm_end.into()).await;
    let cpu_start = Sample::now();
    let (mut all, mut errors, mut first_error, mut last) = (Vec::new(), 0, None, warm_end);
    for w in workers {
        match w.await {
            Ok(r) => {
                all.extend(r.latencies_ns);
                errors += r.errors;
                first_error = first_error.or(r.first_error);
                last = last.max(r.finished);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("worker panicked: {e}"));
            }
        }
    }
    let cpu = Sample::now()
        .zip(cpu_start)
        .and_then(|(now, then)| now.share_since(&then));
    let stats = Stats {
        ops: all.len() as u64,
        errors,
        // Requests started before the deadline finish after it; count the time they took.
        secs: last.saturating_duration_since(warm_end).as_secs_f64(),
        first_error,
        cpu,
        ..Stats::default()
    };
    let rate = stats.rate();
    Stats {
        round_rates: vec![rate],
        ..stats.with_latencies(all)
    }
}

async fn worker<S, F, Fut>(mut state: S, op: F, warm_end: Instant, end: Instant) -> WorkerResult
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
{
    let mut r = WorkerResult {
        latencies_ns: Vec::with_capacity(64 * 1024),
        errors: 0,
        first_error: None,
        finished: Instant::now(),
    };
    for _ in 0..MAX_OPS_PER_WORKER {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let outcome = tokio::time::timeout(OP_TIMEOUT, op(state)).await;
        let took = start.elapsed();
        match outcome {
            Ok(Ok(next)) => {
                state = next;
                if start >= warm_end {
                    r.latencies_ns.push(took.as_nanos() as u64);
                }
            }
            Ok(Err(e)) => {
                r.errors += 1;
                r.first_error = Some(format!("{e:#}"));
                break;
            }
            Err(_) => {
                r.errors += 1;
                r.first_error = Some(format!("no answer within {OP_TIMEOUT:?}"));
                break;
            }
        }
    }
    r.finished = Instant::now();
    r
}

pub type HttpConn = SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection, driven by its own task.
pub async fn http_connect(addr: SocketAddr) -> anyhow::Result<HttpConn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Sends `req` and reads the whole answer (so the connection can carry the next request).
pub async fn http_call(
    conn: &mut HttpConn,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    let status = resp.status();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// A body and its extra headers, made afresh for every request (a distinct signed webhook).
pub type MakeBody = Arc<dyn Fn() -> (Bytes, Vec<(HeaderName, HeaderValue)>) + Send + Sync>;

/// What an HTTP measurement sends: request `n` of a worker goes to `uris[n % len]`.
#[derive(Clone)]
pub struct HttpTarget {
    method: Method,
    uris: Vec<Uri>,
    /// Sent as `application/json` when not empty.
    body: Bytes,
    /// When set, replaces `body` and adds its headers on every request.
    make_body: Option<MakeBody>,
    /// Sent as `authorization: Bearer …` when set.
    bearer: Option<HeaderValue>,
}

impl HttpTarget {
    pub fn new(
        method: Method,
        paths: impl IntoIterator<Item = String>,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Self> {
        let uris = paths
            .into_iter()
            .map(Uri::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!uris.is_empty(), "no URI to load");
        Ok(HttpTarget {
            method,
            uris,
            body: body.into(),
            make_body: None,
            bearer: None,
        })
    }

    /// Every request carries a body (and headers) made by `make` when it is sent, so no two
    /// need be alike; the making is timed with the request, so keep it cheap.
    pub fn bodies(mut self, make: MakeBody) -> Self {
        self.make_body = Some(make);
        self
    }

    /// Every request carries `token` as its bearer credential.
    pub fn bearer(mut self, token: &str) -> anyhow::Result<Self> {
        self.bearer = Some(HeaderValue::from_str(&format!("Bearer {token}"))?);
        Ok(self)
    }

    pub fn request(&self, n: u64) -> Request<Full<Bytes>> {
        let (body, extra) = match &self.make_body {
            Some(make) => make(),
            None => (self.body.clone(), Vec::new()),
        };
        let has_body = !body.is_empty();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uris[(n % self.uris.len() as u64) as usize].clone();
        let h = req.headers_mut();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1"));
        if let Some(b) = &self.bearer {
            h.insert(header::AUTHORIZATION, b.clone());
        }
        for (name, value) in extra {
            h.insert(name, value);
        }
        if has_body && !h.contains_key(header::CONTENT_TYPE) {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        req
    }
}

/// `concurrency` connections, each a worker; any non-2xx answer is an error.
pub async fn http_load(
    load: Load,
    addr: SocketAddr,
    concurrency: usize,
    target: HttpTarget,
) -> anyhow::Result<Stats> {
    let mut states = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        // Workers start at different points so they do not ask for the same key in lockstep.
        states.push((http_connect(addr).await?, i as u64 * 7));
    }
    let op = move |(mut conn, n): (HttpConn, u64)| {
        let req = target.request(n);
        async move {
            let (status, body) = http_call(&mut conn, req).await?;
            anyhow::ensure!(
                status.is_success(),
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok((conn, n + 1))
        }
    };
    Ok(closed_loop(load, states, op).await)
}

/// `n` separate HTTP/2 connections (tonic channels) to `addr`, configured like the gateway's.
pub async fn channels(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = endpoint(addr)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(endpoint.connect().await?);
    }
    Ok(out)
}

pub fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_adaptive_window(true))
}
