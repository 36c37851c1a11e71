//! `maxai`: run the MaxAI Platform.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: glibc malloc took about a fifth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use maxai_kit::{server::cancel_on_signal, telemetry, CancellationToken};
use maxai_platform::{migrate, run, Component, Listeners, PlatformConfig, Sockets};

#[derive(Parser)]
#[command(
    name = "maxai",
    version,
    about = "MaxAI Platform: multi-tenant backend for AI voice and SMS agents"
)]
struct Cli {
    /// TOML file overriding the embedded defaults (see services/platform/config/default.toml).
    #[arg(long, global = true, env = "MAXAI_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: every service, the REST gateway and metrics.
    /// Without DATABASE_URL / REDIS_URL it needs nothing else (SQLite under ./data, memory cache).
    Up,
    /// Run only the named components, as Kubernetes does (e.g. `maxai serve feature-flags`).
    Serve {
        /// feature-flags, iam, gateway
        #[arg(required = true)]
        components: Vec<String>,
    },
    /// Apply the database migrations of every service (or the named ones) and exit.
    Migrate { components: Vec<String> },
    /// Tell the agency story against a running `maxai up` (same machine, same ./data): onboard
    /// an agency, connect accounts, activate a flow, end a call, show the execution.
    Demo {
        /// The platform's REST gateway.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The platform's gRPC listener (the CRM port has no REST route).
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        grpc: String,
    },
    /// Mint an access token from the local key store, e.g. for the bootstrap platform admin:
    /// `maxai token --subject tenants/platform/users/admin`.
    Token {
        /// The principal: tenants/{tenant}/users/{user} or tenants/{tenant}/serviceAccounts/{account}.
        #[arg(long)]
        subject: String,
        /// Lifetime in seconds (default: iam.access_token_ttl_secs).
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// Also make sure the user exists and holds this role, e.g. roles/tenant-admin (the
        /// tenant must exist). Replicas running now see the grant within their cache lifetime.
        #[arg(long)]
        role: Option<String>,
        /// Scope of --role: tenants/{tenant} (default) or tenants/{tenant}/clients/{client}.
        #[arg(long, requires = "role")]
        scope: Option<String>,
    },
}

fn parse_components(names: &[String]) -> anyhow::Result<Vec<Component>> {
    if names.is_empty() {
        return Ok(Component::ALL.to_vec());
    }
    names.iter().map(|n| Component::parse(n)).collect()
}

fn banner(l: &Listeners) {
    let http = l.http.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let grpc = l.grpc.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "\nMaxAI Platform is up\n  REST     http://{http}   (OpenAPI: http://{http}/openapi.json)\n  gRPC     {grpc}   (health + reflection: grpcurl -plaintext {grpc} list)\n  metrics  http://{}/metrics\n\nEvery call but sign-in, JWKS and health needs a bearer token. The platform admin\n(tenants/platform/users/admin, roles/platform-admin) gets one with:\n  TOKEN=$(maxai token --subject tenants/platform/users/admin)\n\nTry:\n  curl -s -X POST http://{http}/v1/tenants?tenantId=acme -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\\n    -d '{{\"displayName\":\"Acme Agency\",\"contactEmail\":\"ops@acme.example\"}}'\n  curl -s -X POST http://{http}/v1/flags?flagId=new-dashboard -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\\n    -d '{{\"description\":\"New dashboard\",\"stage\":\"STAGE_BETA\",\"environments\":[{{\"environment\":\"production\",\"enabled\":true,\"rolloutBasisPoints\":5000}}]}}'\n  curl -s -X POST http://{http}/ofrep/v1/evaluate/flags -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"context\":{{\"tenantId\":\"acme\"}}}}'\n  curl -s http://{http}/.well-known/jwks.json\n\nA tenant admin of acme: maxai token --subject tenants/acme/users/ann --role roles/tenant-admin\n",
        l.metrics
    );
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    let config = PlatformConfig::load(cli.config.as_deref())?;
    telemetry::init(&config.telemetry);
    if !config.telemetry.otlp_endpoint.is_empty() {
        // Said out loud rather than silently ignored: logs still carry correlation ids.
        tracing::warn!(endpoint = %config.telemetry.otlp_endpoint, "OTLP trace export is not built into this release; traces are not exported");
    }
    match cli.command {
        Command::Up | Command::Serve { .. } => {
            let (components, show_banner) = match &cli.command {
                Command::Serve { components } => (parse_components(components)?, false),
                _ => (Component::ALL.to_vec(), true),
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let mut config = config;
            // Only `up` runs the sandbox: a `serve` replica is deployed next to real providers.
            let sandbox = if show_banner && maxai_platform::sandbox::wanted(&config) {
                Some(maxai_platform::sandbox::start(&mut config).await?)
            } else {
                None
            };
            let sockets = Sockets::bind(&config).await?;
            run(config, &components, sockets, shutdown, |l| {
                if show_banner {
                    banner(&l);
                    if let Some(sandbox) = &sandbox {
                        println!("{}", sandbox.describe());
                    }
                }
            })
            .await
        }
        Command::Token {
            subject,
            ttl_secs,
            role,
            scope,
        } => {
            let parts: Vec<&str> = subject.split('/').collect();
            let tenant = match parts.as_slice() {
                ["tenants", t, "users" | "serviceAccounts", id] if !t.is_empty() && !id.is_empty() => t.to_string(),
                _ => anyhow::bail!("--subject must be tenants/{{tenant}}/users/{{user}} or tenants/{{tenant}}/serviceAccounts/{{account}}"),
            };
            if let Some(role) = &role {
                maxai_iam::ensure_grant(&config.storage, &subject, role, scope.as_deref()).await?;
                eprintln!("{subject} holds {role}");
            }
            let ring = maxai_iam::key_ring(&config.storage, &config.iam).await?;
            let (token, claims) = ring.issue(
                &subject,
                &tenant,
                ttl_secs.map(std::time::Duration::from_secs),
            )?;
            eprintln!(
                "access token for {} (tenant {}), expires at unix {}",
                claims.sub, claims.tid, claims.exp
            );
            println!("{token}");
            Ok(())
        }
        Command::Demo { url, grpc } => maxai_platform::demo::run(&config, &url, &grpc).await,
        Command::Migrate { components } => {
            let components = parse_components(&components)?;
            for done in migrate(&config, &components).await? {
                println!("migrated {done}");
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match main_inner(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maxai: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
