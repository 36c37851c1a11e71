//! The feature-flags service and the gateway in front of it, started in-process with the
//! platform's defaults (SQLite in a temporary folder, memory shared state), loaded with 100
//! flags that exercise every evaluation rule.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use maxai_kit::{
    auth::{authed, Authed, Guard, GuardLayer},
    server::{serve_grpc, GrpcApp},
    shared_state::SharedState,
    CancellationToken,
};
use maxai_platform::PlatformConfig;
use maxai_proto::maxai::flags::v1::{
    self as pb, feature_flags_service_client::FeatureFlagsServiceClient,
};
use secrecy::SecretString;
use tokio::runtime::Handle;

use crate::{
    baseline::spawn_server,
    load::{self, Load, Stats},
};

pub const FLAGS: usize = 100;
/// Flags 0..ALLOWLISTED carry a 10,000-tenant allowlist.
const ALLOWLISTED: usize = 10;
const ALLOWLIST_SIZE: usize = 10_000;
const CHUNK: usize = 1000;
/// Evaluation contexts draw tenants from twice the allowlisted range, so about half match.
const TENANTS: u64 = 20_000;
const USERS: u64 = 50_000;
const ENV: &str = "production";

pub fn key(i: usize) -> String {
    format!("flag-{i:03}")
}

/// Starts the service with `config`'s settings but SQLite under `data_dir` and memory shared
/// state, whatever the environment says, so the run needs nothing outside the process.
pub async fn serve_flags(
    sut: &Handle,
    config: &PlatformConfig,
    data_dir: &Path,
    guard: Arc<Guard>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let mut storage = config.storage.clone();
    storage.database_url = SecretString::from(String::new());
    storage.redis_url = SecretString::from(String::new());
    storage.data_dir = data_dir.to_path_buf();
    let (flags_config, max_message) = (config.flags.clone(), config.server.max_message_bytes);
    let token = stop.clone();
    // Started on the server runtime: the snapshot follower is spawned where `start` runs.
    let service = sut
        .spawn(async move {
            let shared = SharedState::memory();
            maxai_feature_flags::start(&flags_config, &storage, &shared, max_message, token).await
        })
        .await??;
    spawn_server(sut, move |l| async move {
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(service);
        let app = GrpcApp {
            routes: routes.routes(),
            service_names: vec![maxai_feature_flags::SERVICE_NAME.to_owned()],
            guard: GuardLayer::new(guard, max_message),
        };
        serve_grpc(l, app, stop, Duration::ZERO).await
    })
    .await
}

/// The REST gateway with the platform's `[gateway]` settings in front of `upstream`, which
/// serves the gRPC services named in `services`.
pub async fn serve_gateway(
    sut: &Handle,
    config: &PlatformConfig,
    upstream: SocketAddr,
    services: Vec<String>,
    guard: Arc<Guard>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let (mut gw_config, max_message) = (config.gateway.clone(), config.server.max_message_bytes);
    // The limiter runs on every request, as in production, with limits the load never reaches.
    let unlimited = maxai_kit::rate_limit::Rate {
        per_minute: u32::MAX / 2,
        burst: 1_000_000,
    };
    gw_config.rate_limits.per_ip = unlimited;
    gw_config.rate_limits.per_tenant = unlimited;
    let gateway = sut
        .spawn(async move {
            maxai_gateway::Gateway::new(
                gw_config,
                &format!("http://{upstream}"),
                services,
                max_message,
                maxai_gateway::GatewayDeps {
                    guard,
                    limiter: SharedState::memory().limiter,
                    tenant_rates: None,
                },
            )
        })
        .await??;
    // Served as `maxai up` serves it (TCP_NODELAY on every connection).
    spawn_server(sut, move |l| async move {
        maxai_kit::server::serve_http(l, maxai_gateway::router(gateway), stop).await?;
        Ok(())
    })
    .await
}

/// What the data set looks like, for the report.
#[derive(Debug, serde::Serialize)]
pub struct Seeded {
    pub flags: usize,
    pub allowlist_entries: usize,
    pub seconds: f64,
    /// How a sample of 2,000 evaluations was decided: proof the load exercises every rule.
    pub reasons: BTreeMap<String, usize>,
}

/// 100 flags: 10 with 10,000-tenant allowlists, 50 percentage rollouts by tenant or user (some
/// switched off), 20 gated on a rollout flag, 20 gated on two flags (chains two deep).
pub async fn seed(addr: SocketAddr, token: &str) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let mut client =
        FeatureFlagsServiceClient::new(authed(load::endpoint(addr)?.connect().await?, token)?);
    for i in 0..FLAGS {
        let (bp, unit, enabled, prerequisites) = match i {
            0..ALLOWLISTED => (0, pb::RolloutUnit::Tenant, true, vec![]),
            ALLOWLISTED..60 => {
                let unit = if i % 2 == 0 {
                    pb::RolloutUnit::Tenant
                } else {
                    pb::RolloutUnit::User
                };
                ((i as u32 * 997) % 10_001, unit, i % 10 != 5, vec![])
            }
            60..80 => (10_000, pb::RolloutUnit::Tenant, true, vec![key(i - 50)]),
            _ => (
                5_000,
                pb::RolloutUnit::User,
                true,
                vec![key(i - 20), key(i - 80)],
            ),
        };
        let flag = pb::Flag {
            description: format!("bench flag {i}"),
            stage: [pb::Stage::Alpha, pb::Stage::Beta, pb::Stage::Ga][i % 3] as i32,
            environments: vec![
                pb::EnvironmentState {
                    environment: ENV.into(),
                    enabled,
                    rollout_basis_points: bp,
                    rollout_unit: unit as i32,
                },
                pb::EnvironmentState {
                    environment: "staging".into(),
                    enabled: true,
                    rollout_basis_points: 10_000,
                    rollout_unit: unit as i32,
                },
            ],
            prerequisites,
            ..Default::default()
        };
        client
            .create_flag(pb::CreateFlagRequest {
                flag: Some(flag),
                flag_id: key(i),
                request_id: String::new(),
            })
            .await?;
    }
    let mut entries = 0;
    for i in 0..ALLOWLISTED {
        // Overlapping ranges, so a tenant is on several lists and off others.
        let first = i * CHUNK;
        for chunk in (first..first + ALLOWLIST_SIZE).step_by(CHUNK) {
            let subjects: Vec<String> = (chunk..chunk + CHUNK)
                .map(|t| format!("tenant-{t:05}"))
                .collect();
            entries += subjects.len();
            client
                .add_allowlist_entries(pb::AddAllowlistEntriesRequest {
                    flag: format!("flags/{}", key(i)),
                    environment: ENV.into(),
                    kind: pb::AllowlistKind::Tenant as i32,
                    subjects,
                })
                .await?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let keys = Arc::new((0..FLAGS).map(key).collect::<Vec<_>>());
    let mut reasons = BTreeMap::new();
    for n in 0..20 {
        let reply = client.batch_evaluate_flags(batch(&keys, n * 997)).await?;
        for e in reply.into_inner().evaluations {
            *reasons.entry(format!("{:?}", e.reason())).or_default() += 1;
        }
    }
    Ok(Seeded {
        flags: FLAGS,
        allowlist_entries: entries,
        seconds,
        reasons,
    })
}

/// Request `n`: all 100 keys for a tenant and user that change with `n`.
fn batch(keys: &[String], n: u64) -> pb::BatchEvaluateFlagsRequest {
    let spread = n.wrapping_mul(7919);
    pb::BatchEvaluateFlagsRequest {
        context: Some(pb::EvaluationContext {
            environment: ENV.into(),
            tenant_id: format!("tenant-{:05}", spread % TENANTS),
            user_id: format!("user-{}", spread % USERS),
        }),
        keys: keys.to_vec(),
    }
}

/// BatchEvaluateFlags with all 100 keys from `concurrency` workers over `channels` connections.
/// The figure counts RPCs; the caller multiplies by the batch size.
pub async fn load_batch(
    load: Load,
    addr: SocketAddr,
    token: &str,
    concurrency: usize,
    channels: usize,
) -> anyhow::Result<Stats> {
    let chans = load::channels(addr, channels).await?;
    let keys = Arc::new((0..FLAGS).map(key).collect::<Vec<_>>());
    let mut states = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let client = FeatureFlagsServiceClient::new(authed(chans[i % chans.len()].clone(), token)?);
        states.push((client, i as u64 * 100_003));
    }
    let op = move |(mut client, n): (FeatureFlagsServiceClient<Authed>, u64)| {
        let req = batch(&keys, n);
        async move {
            let got = client.batch_evaluate_flags(req).await?.into_inner();
            anyhow::ensure!(
                got.evaluations.len() == FLAGS,
                "{} evaluations",
                got.evaluations.len()
            );
            Ok((client, n + 1))
        }
    };
    Ok(load::closed_loop(load, states, op).await)
}
