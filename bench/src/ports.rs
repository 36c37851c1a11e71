//! Port-call overhead: `MessagingService/GetMessageStatus` over gRPC through the kit's guard (as
//! every production server runs it: bearer verified from the cache, `ports.messaging.call`
//! authorized on `context.connection`) into the Twilio adapter, which fetches the message from
//! the fake Twilio over loopback HTTP (the real reqwest path with its retries and breaker; only
//! the base URL differs) and maps the answer back. Credentials come from `StaticCredentials`
//! instead of IAM's ConnectionCredentialService: the IAM client caches a credential for a minute,
//! so at steady state neither costs a round trip. GetMessageStatus is the port's safe, repeatable
//! read; a SendSms per request would measure the dedupe cache as well.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use maxai_adapter::StaticCredentials;
use maxai_fakes::twilio::{FakeTwilio, FakeTwilioConfig};
use maxai_kit::{
    auth::{authed, Authed, Guard, GuardLayer},
    server::{serve_grpc, GrpcApp},
    shared_state::MemoryCache,
    CancellationToken,
};
use maxai_proto::maxai::{
    common::v1::CallContext,
    iam::v1::{ConnectionAuthMethod, ConnectionCredential, ConnectionProvider},
    ports::messaging::v1::{
        messaging_service_client::MessagingServiceClient, GetMessageStatusRequest, MessageStatus,
        SendSmsRequest,
    },
};
use maxai_twilio::{TwilioAdapter, TwilioConfig};
use tokio::runtime::Handle;

use crate::{
    baseline::spawn_server,
    load::{self, HttpTarget, Load, Stats},
};

pub const SERVICE_NAME: &str = "maxai.ports.messaging.v1.MessagingService";
/// In the tenant and client the webhook bench creates in IAM.
pub const CONNECTION: &str = "tenants/hooks/clients/shop/connections/twilio";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "bench-twilio-auth-token";
const FROM: &str = "+14155550100";
const TO: &str = "+14155550199";

/// The adapter behind the guard, the fake Twilio it talks to, and one message the fake holds.
pub struct Port {
    pub addr: SocketAddr,
    pub sid: String,
    fake: FakeTwilio,
}

impl Port {
    /// Starts the fake Twilio and the adapter on the server runtime and sends one SMS through
    /// the port (so the fake holds a message to ask about).
    pub async fn start(
        sut: &Handle,
        guard: Arc<Guard>,
        max_message: usize,
        token: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<Port> {
        // The fake's axum server is spawned where it starts: on the server runtime.
        let fake = sut
            .spawn(FakeTwilio::try_start(FakeTwilioConfig::default()))
            .await?
            .context("fake Twilio")?;
        fake.add_account(ACCOUNT, AUTH_TOKEN);
        fake.add_number(ACCOUNT, FROM);
        let creds = StaticCredentials::new();
        creds.insert(ConnectionCredential {
            connection: CONNECTION.into(),
            provider: ConnectionProvider::Twilio as i32,
            auth_method: ConnectionAuthMethod::ApiKey as i32,
            api_key: AUTH_TOKEN.into(),
            external_account_id: ACCOUNT.into(),
            ..Default::default()
        });
        let config = TwilioConfig {
            base_url: fake.base_url().to_owned(),
            ..TwilioConfig::default()
        };
        let adapter = TwilioAdapter::new(&config, creds, Arc::new(MemoryCache::new(10_000)));
        let server = maxai_twilio::server(adapter)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let addr = spawn_server(sut, move |l| async move {
            let mut routes = tonic::service::RoutesBuilder::default();
            routes.add_service(server);
            let app = GrpcApp {
                routes: routes.routes(),
                service_names: vec![SERVICE_NAME.to_owned()],
                guard: GuardLayer::new(guard, max_message),
            };
            serve_grpc(l, app, stop, Duration::ZERO).await
        })
        .await?;
        let channel = load::endpoint(addr)?.connect().await?;
        let mut client = MessagingServiceClient::new(authed(channel, token)?);
        let sent = client
            .send_sms(SendSmsRequest {
                context: context("bench-setup"),
                from_number: FROM.into(),
                to_number: TO.into(),
                body: "bench".into(),
                ..Default::default()
            })
            .await
            .context("SendSms through the adapter")?
            .into_inner();
        anyhow::ensure!(
            fake.message(&sent.sid).is_some(),
            "the fake holds no message {}",
            sent.sid
        );
        let port = Port {
            addr,
            sid: sent.sid,
            fake,
        };
        let status = client
            .get_message_status(port.request())
            .await
            .context("GetMessageStatus through the adapter")?
            .into_inner();
        anyhow::ensure!(
            status.sid == port.sid && status.status() == MessageStatus::Queued,
            "GetMessageStatus answered {status:?}"
        );
        Ok(port)
    }

    fn request(&self) -> GetMessageStatusRequest {
        GetMessageStatusRequest {
            context: context(""),
            sid: self.sid.clone(),
        }
    }

    /// The request the adapter makes for a status, sent straight to the fake Twilio: the HTTP
    /// hop inside every port call, measured alone to show what the rest of the path costs.
    pub fn fake_fetch(&self) -> anyhow::Result<(SocketAddr, HttpTarget)> {
        use base64::Engine as _;
        let addr: SocketAddr = self
            .fake
            .base_url()
            .trim_start_matches("http://")
            .parse()
            .context("the fake's address")?;
        let path = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{}.json", self.sid);
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}"));
        let auth = http::HeaderValue::from_str(&format!("Basic {basic}"))?;
        let target = HttpTarget::new(http::Method::GET, [path], bytes::Bytes::new())?.bodies(
            Arc::new(move || {
                (
                    bytes::Bytes::new(),
                    vec![(http::header::AUTHORIZATION, auth.clone())],
                )
            }),
        );
        Ok((addr, target))
    }

    /// Requests the fake received so far (its recording would otherwise grow for the whole run).
    pub fn take_requests(&self) -> usize {
        let n = self.fake.requests().len();
        self.fake.clear_requests();
        n
    }
}

fn context(idempotency_key: &str) -> Option<CallContext> {
    Some(CallContext {
        connection: CONNECTION.into(),
        idempotency_key: idempotency_key.into(),
    })
}

/// GetMessageStatus from `concurrency` workers over `channels` connections; every answer must
/// name the message asked about, so an error path cannot pass for a fast one.
pub async fn load_status(
    load: Load,
    port: Arc<Port>,
    token: &str,
    concurrency: usize,
    channels: usize,
) -> anyhow::Result<Stats> {
    let chans = load::channels(port.addr, channels).await?;
    let mut states = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let client = MessagingServiceClient::new(authed(chans[i % chans.len()].clone(), token)?);
        states.push((client, port.clone()));
    }
    let op = |(mut client, port): (MessagingServiceClient<Authed>, Arc<Port>)| async move {
        let got = client
            .get_message_status(port.request())
            .await?
            .into_inner();
        anyhow::ensure!(got.sid == port.sid, "status of {}", got.sid);
        Ok((client, port))
    };
    let stats = load::closed_loop(load, states, op).await;
    // Every RPC reached Twilio: the adapter caches nothing for a status read.
    let reached = port.take_requests() as u64;
    anyhow::ensure!(
        reached >= stats.ops,
        "{} answers but only {reached} requests reached the fake Twilio",
        stats.ops
    );
    Ok(stats)
}
