//! The baselines: the same frameworks with none of the platform's work and their default
//! settings (axum::serve as the gateway uses it; tonic's server with its default TCP_NODELAY),
//! so a ratio shows what the platform adds or loses.
use std::{
    convert::Infallible,
    future::{ready, Future, Ready},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use http::{uri::PathAndQuery, StatusCode};
use maxai_kit::CancellationToken;
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, runtime::Handle};
use tonic::{
    client::Grpc,
    codegen::{BoxFuture, Service},
    server::{NamedService, UnaryService},
    transport::{server::TcpIncoming, Channel},
    Request, Response, Status,
};
use tonic_prost::ProstCodec;

use crate::load::{self, Load, Stats};

pub const ECHO_PATH: &str = "/bench.v1.EchoService/Echo";
/// About the size of a flag name, like the proxy's JSON body.
pub const ECHO_TEXT: &str = "flags/flag-042";

/// The echo message, written by hand instead of generated: one string field.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// Binds 127.0.0.1:0 on the server runtime and runs `serve` there until it returns.
pub async fn spawn_server<F, Fut>(sut: &Handle, serve: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    // Bound inside the server runtime so its reactor, not the load generator's, drives accept.
    let listener = sut
        .spawn(async { TcpListener::bind("127.0.0.1:0").await })
        .await??;
    let addr = listener.local_addr()?;
    sut.spawn(async move {
        if let Err(e) = serve(listener).await {
            eprintln!("bench server on {addr} stopped: {e:#}");
        }
    });
    Ok(addr)
}

pub async fn serve_hello(sut: &Handle, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    spawn_server(sut, move |l| async move {
        let app = Router::new().route("/hello", get(|| async { "Hello, World!" }));
        axum::serve(l, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await?;
        Ok(())
    })
    .await
}

#[derive(Clone)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = "bench.v1.EchoService";
}

struct EchoMethod;

impl UnaryService<Echo> for EchoMethod {
    type Response = Echo;
    type Future = Ready<Result<Response<Echo>, Status>>;
    fn call(&mut self, request: Request<Echo>) -> Self::Future {
        ready(Ok(Response::new(request.into_inner())))
    }
}

/// What tonic's generated server does for one unary method, minus the generator. tonic's router
/// only sends this service's paths here, and every one of them echoes: the service has one method.
impl Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Echo, Echo>::default());
            Ok(grpc.unary(EchoMethod, req).await)
        })
    }
}

pub async fn serve_echo(sut: &Handle, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    spawn_server(sut, move |l| async move {
        tonic::transport::Server::builder()
            .add_service(EchoServer)
            // tonic's own default (`Server::tcp_nodelay`), which a given listener bypasses.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(l).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            )
            .await?;
        Ok(())
    })
    .await
}

pub async fn echo(grpc: &mut Grpc<Channel>, text: String) -> anyhow::Result<String> {
    grpc.ready().await?;
    let reply: Response<Echo> = grpc
        .unary(
            Request::new(Echo { text }),
            PathAndQuery::from_static(ECHO_PATH),
            ProstCodec::<Echo, Echo>::default(),
        )
        .await?;
    Ok(reply.into_inner().text)
}

/// `concurrency` workers spread over `channels` connections.
pub async fn load_echo(
    load: Load,
    addr: SocketAddr,
    concurrency: usize,
    channels: usize,
) -> anyhow::Result<Stats> {
    let chans = load::channels(addr, channels).await?;
    let states = (0..concurrency)
        .map(|i| Grpc::new(chans[i % chans.len()].clone()))
        .collect();
    let op = |mut grpc: Grpc<Channel>| async move {
        let got = echo(&mut grpc, ECHO_TEXT.to_owned()).await?;
        anyhow::ensure!(got == ECHO_TEXT, "echo answered {got:?}");
        Ok(grpc)
    };
    Ok(load::closed_loop(load, states, op).await)
}

#[derive(Serialize, Deserialize)]
pub struct NameJson {
    pub name: String,
}

struct Proxy {
    clients: Vec<Grpc<Channel>>,
    next: AtomicUsize,
}

/// JSON in → gRPC echo → JSON out: the least any REST → gRPC gateway must do.
async fn proxy(
    State(p): State<Arc<Proxy>>,
    Json(body): Json<NameJson>,
) -> Result<Json<NameJson>, StatusCode> {
    let i = p.next.fetch_add(1, Ordering::Relaxed) % p.clients.len();
    let mut grpc = p.clients[i].clone();
    let name = echo(&mut grpc, body.name)
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(Json(NameJson { name }))
}

/// The proxy over `connections` lazy channels, as the gateway connects upstream.
pub async fn serve_proxy(
    sut: &Handle,
    echo_addr: SocketAddr,
    connections: usize,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let endpoint = load::endpoint(echo_addr)?;
    // Channels spawn their workers on the runtime that creates them: the server's.
    let state = sut
        .spawn(async move {
            Arc::new(Proxy {
                clients: (0..connections.max(1))
                    .map(|_| Grpc::new(endpoint.connect_lazy()))
                    .collect(),
                next: AtomicUsize::new(0),
            })
        })
        .await?;
    spawn_server(sut, move |l| async move {
        let app = Router::new().route("/echo", post(proxy)).with_state(state);
        axum::serve(l, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await?;
        Ok(())
    })
    .await
}
