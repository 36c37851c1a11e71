//! IAM figures: the policy engine answering BatchAuthorize over gRPC (100 checks a call, half
//! allowed), and access-token issuance by the key ring (in-process: what every sign-in, refresh
//! and API-key exchange does).
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use maxai_iam::store::{AccessStore, TenancyStore, UserStore};
use maxai_kit::{
    auth::{authed, Authed, Guard, GuardLayer, Verifier},
    server::{serve_grpc, GrpcApp},
    shared_state::SharedState,
    CancellationToken,
};
use maxai_platform::PlatformConfig;
use maxai_proto::maxai::iam::v1::{
    self as pb, authorization_service_client::AuthorizationServiceClient,
};
use secrecy::SecretString;
use tokio::runtime::Handle;

use crate::{
    baseline::spawn_server,
    load::{self, Load, Stats},
};

pub const CHECKS: usize = 100;
const USERS: usize = 100;
const CLIENTS: usize = 20;

fn embedded(config: &PlatformConfig, data_dir: &Path) -> maxai_kit::config::StorageConfig {
    let mut storage = config.storage.clone();
    storage.database_url = SecretString::from(String::new());
    storage.redis_url = SecretString::from(String::new());
    storage.data_dir = data_dir.to_path_buf();
    storage
}

/// IAM as `maxai up` runs it here.
pub struct Iam {
    pub addr: SocketAddr,
    /// The guard every bench server is behind (IAM's key ring and policy engine).
    pub guard: Arc<Guard>,
    pub ring: Arc<maxai_iam::tokens::KeyRing>,
}

impl Iam {
    /// A platform-admin token that outlives the run.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        Ok(self
            .ring
            .issue(
                maxai_iam::BOOTSTRAP_ADMIN,
                maxai_iam::PLATFORM_TENANT,
                Some(Duration::from_secs(3600)),
            )?
            .0)
    }
}

/// IAM on SQLite under `data_dir`, seeded with one tenant, 20 clients and 100 users: even users
/// are tenant members, odd users view one client each; and the bootstrap platform admin.
pub async fn serve_iam(
    sut: &Handle,
    config: &PlatformConfig,
    data_dir: &Path,
    stop: CancellationToken,
) -> anyhow::Result<Iam> {
    let storage = embedded(config, data_dir);
    let mut iam_config = config.iam.clone();
    iam_config.bootstrap_admin = true;
    let max_message = config.server.max_message_bytes;
    let token = stop.clone();
    let seed_storage = storage.clone();
    let servers = sut
        .spawn(async move {
            let servers = maxai_iam::start(
                &storage,
                &iam_config,
                &SharedState::memory(),
                max_message,
                token,
            )
            .await?;
            seed(&seed_storage).await?;
            anyhow::Ok(servers)
        })
        .await??;
    let ring = servers.key_ring.clone();
    let guard = Guard::new(
        Verifier::new(iam_config_issuer(config), ring.clone()),
        servers.policy.clone(),
    );
    let layer = GuardLayer::new(guard.clone(), max_message);
    let addr = spawn_server(sut, move |l| async move {
        let mut routes = tonic::service::RoutesBuilder::default();
        servers.add_to(&mut routes);
        let app = GrpcApp {
            routes: routes.routes(),
            service_names: maxai_iam::SERVICE_NAMES.map(String::from).to_vec(),
            guard: layer,
        };
        serve_grpc(l, app, stop, Duration::ZERO).await
    })
    .await?;
    Ok(Iam { addr, guard, ring })
}

fn iam_config_issuer(config: &PlatformConfig) -> String {
    config.iam.issuer.clone()
}

async fn seed(storage: &maxai_kit::config::StorageConfig) -> anyhow::Result<()> {
    let db = maxai_kit::storage::connect(storage, maxai_iam::STORAGE_NAME, &maxai_iam::MIGRATIONS)
        .await?;
    let store = maxai_iam::store::SqlIamStore::new(db);
    store
        .create_tenant(&maxai_iam::store::conformance::tenant("acme"), None)
        .await?;
    for c in 0..CLIENTS {
        store
            .create_client(
                &maxai_iam::store::conformance::client("acme", &format!("c{c}")),
                None,
            )
            .await?;
    }
    for u in 0..USERS {
        let user = maxai_iam::domain::User {
            tenant_id: "acme".into(),
            id: format!("u{u}"),
            email: format!("u{u}@acme.example"),
            display_name: String::new(),
            state: maxai_iam::domain::UserState::Active,
            google_subject: String::new(),
            hosted_domain: String::new(),
            picture_uri: String::new(),
            last_sign_in_at_us: None,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        store.create_user(&user, None).await?;
        let (role, scope) = if u.is_multiple_of(2) {
            ("roles/tenant-member", "tenants/acme".to_owned())
        } else {
            (
                "roles/client-viewer",
                format!("tenants/acme/clients/c{}", u % CLIENTS),
            )
        };
        let a = maxai_iam::domain::Assignment {
            tenant_id: "acme".into(),
            id: format!("a{u}"),
            principal: format!("tenants/acme/users/u{u}"),
            role: role.into(),
            scope,
            description: String::new(),
            expire_at_us: None,
            creator: String::new(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        store.create_assignment(&a, None).await?;
    }
    Ok(())
}

/// 100 checks: every user once, reading or deleting a client (members may read, nobody may delete).
fn checks(n: u64) -> pb::BatchAuthorizeRequest {
    let checks = (0..CHECKS)
        .map(|i| {
            let u = (i as u64 + n) % USERS as u64;
            let permission = if (i as u64 + n).is_multiple_of(2) {
                "iam.clients.get"
            } else {
                "iam.clients.delete"
            };
            pb::AuthorizationCheck {
                subject: format!("tenants/acme/users/u{u}"),
                permission: permission.into(),
                resource: format!("tenants/acme/clients/c{}", (u + n) % CLIENTS as u64),
            }
        })
        .collect();
    pb::BatchAuthorizeRequest {
        parent: "tenants/acme".into(),
        checks,
    }
}

pub async fn load_authorize(
    load: Load,
    addr: SocketAddr,
    token: &str,
    concurrency: usize,
    channels: usize,
) -> anyhow::Result<Stats> {
    let chans = load::channels(addr, channels).await?;
    let mut states = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let channel = authed(chans[i % chans.len()].clone(), token)?;
        states.push((AuthorizationServiceClient::new(channel), i as u64 * 7));
    }
    let op = move |(mut client, n): (AuthorizationServiceClient<Authed>, u64)| async move {
        let got = client.batch_authorize(checks(n)).await?.into_inner();
        anyhow::ensure!(got.results.len() == CHECKS, "{} results", got.results.len());
        Ok((client, n + 1))
    };
    Ok(load::closed_loop(load, states, op).await)
}

/// Access tokens issued back to back by `concurrency` workers.
pub async fn load_issue(
    load: Load,
    ring: Arc<maxai_iam::tokens::KeyRing>,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let states = (0..concurrency).map(|i| (ring.clone(), i as u64)).collect();
    let op = move |(ring, n): (Arc<maxai_iam::tokens::KeyRing>, u64)| async move {
        let subject = format!("tenants/acme/users/u{}", n % USERS as u64);
        let (token, _) = ring.issue(&subject, "acme", None)?;
        anyhow::ensure!(token.len() > 100, "short token");
        Ok((ring, n + 1))
    };
    Ok(load::closed_loop(load, states, op).await)
}
