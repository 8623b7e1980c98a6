//! The operations endpoints: `/metrics` (and `/healthz`, `/readyz`) on the metrics address, and
//! the probes alone (`/healthz`, `/readyz`) on an address of their own: a client holding every
//! connection of the metrics endpoint (a slow or hostile scraper) must never make the kubelet
//! restart the pod.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::warn;

use crate::ops::metrics::Metrics;

/// What `/readyz` reports on: watches established, and leader election healthy.
pub struct Health {
    leader_election: Option<Duration>,
    leading: AtomicBool,
    watching: AtomicBool,
    lease_checked: Mutex<Option<Instant>>,
}

impl Health {
    /// `renew_interval` is `Some` when leader election is on.
    pub fn new(renew_interval: Option<Duration>) -> Self {
        Self {
            leader_election: renew_interval,
            leading: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            lease_checked: Mutex::new(None),
        }
    }

    /// Whether the controller's watches have completed their first list (false again when
    /// they stop).
    pub fn set_watches_established(&self, established: bool) {
        self.watching.store(established, Ordering::SeqCst);
    }

    /// Leadership gained or lost.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
    }

    /// The Lease was read or written successfully just now.
    pub fn lease_checked(&self) {
        *self.lease_checked.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// `Ok` with a word on the state, or why the replica is not ready.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        let leading = self.leading.load(Ordering::SeqCst);
        match self.leader_election {
            Some(renew_interval) if !leading => {
                let checked = *self.lease_checked.lock().unwrap_or_else(|e| e.into_inner());
                match checked {
                    Some(at) if at.elapsed() <= renew_interval * 3 => Ok("standing by"),
                    _ => Err("leader election cannot reach the Lease"),
                }
            }
            _ if self.watching.load(Ordering::SeqCst) => Ok("leading, watches established"),
            _ => Err("watches not established yet"),
        }
    }
}

/// How long the endpoint gives clients: to send a request's headers, and to keep a connection
/// at all (idle keep-alive included), and how many connections it serves at once. Scrapers and
/// probes need little; a client that opens connections and sends nothing must not tie it up.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Time to receive a request's headers.
    pub header_read: Duration,
    /// Longest life of a connection.
    pub connection_lifetime: Duration,
    /// Connections served at once; more wait to be accepted.
    pub connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(60),
            connections: 64,
        }
    }
}

/// What an endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/metrics`, `/healthz` and `/readyz`.
    Metrics,
    /// `/healthz` and `/readyz` only, for the kubelet.
    Probes,
}

/// Listens on `addr` and serves `endpoint` in the background; returns the bound address.
pub async fn start(
    (addr, endpoint): (std::net::SocketAddr, Endpoint),
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let served = Served {
        endpoint,
        metrics,
        health,
    };
    tokio::spawn(serve(listener, served, ServerLimits::default()));
    Ok(bound)
}

/// What one listener serves, and from what.
#[derive(Clone)]
pub struct Served {
    /// Which paths.
    pub endpoint: Endpoint,
    /// For `/metrics`.
    pub metrics: Arc<Metrics>,
    /// For `/readyz`.
    pub health: Arc<Health>,
}

/// Serves on `listener` until the process ends.
pub async fn serve(listener: TcpListener, served: Served, limits: ServerLimits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    loop {
        // Wait for a free slot before accepting: excess connections queue in the backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, endpoint = ?served.endpoint, "operations endpoint: accept failed");
                continue;
            }
        };
        let served = served.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let served = served.clone();
                async move { Ok::<_, Infallible>(route(&request, &served)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
        });
    }
}

fn route<B>(request: &Request<B>, served: &Served) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" if served.endpoint == Endpoint::Metrics => {
            // Prometheus asks for OpenMetrics; curl, promtool and older scrapers get the classic
            // text format, whose counters are named with their _total.
            let accept = request.headers().get(http::header::ACCEPT);
            let accept = accept.and_then(|value| value.to_str().ok()).unwrap_or("");
            if accept.contains("application/openmetrics-text") {
                let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                text(StatusCode::OK, kind, served.metrics.render())
            } else {
                let kind = "text/plain; version=0.0.4; charset=utf-8";
                let body = crate::ops::metrics::classic_text(&served.metrics.render());
                text(StatusCode::OK, kind, body)
            }
        }
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match served.health.readiness() {
            Ok(state) => text(StatusCode::OK, "text/plain", format!("ok: {state}\n")),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn silent_and_greedy_clients_cannot_tie_the_endpoint_up() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServerLimits {
            header_read: Duration::from_millis(200),
            connection_lifetime: Duration::from_millis(500),
            connections: 2,
        };
        let served = Served {
            endpoint: Endpoint::Metrics,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new(None)),
        };
        tokio::spawn(serve(listener, served, limits));
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer).await;
            answer
        };
        // Two clients connect and say nothing: they hold both slots, but not for long.
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), get("/healthz"))
            .await
            .expect("served once the silent connections timed out");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "the cap held no one back"
        );
        // A silent connection is closed by the server.
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(2), silent[0].read(&mut buffer))
            .await
            .expect("the silent connection was closed");
        assert!(matches!(read, Ok(_) | Err(_)));
    }

    /// Every connection of the metrics endpoint held by clients that send nothing: the probes,
    /// on a listener of their own, answer at once.
    #[tokio::test]
    async fn probes_answer_while_scrapers_hold_every_metrics_connection() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(None));
        health.set_watches_established(true);
        let limits = ServerLimits {
            header_read: Duration::from_secs(30),
            connection_lifetime: Duration::from_secs(60),
            connections: 4,
        };
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let served = |endpoint| Served {
            endpoint,
            metrics: metrics.clone(),
            health: health.clone(),
        };
        tokio::spawn(serve(metrics_listener, served(Endpoint::Metrics), limits));
        let probes_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let probes_addr = probes_listener.local_addr().unwrap();
        tokio::spawn(serve(probes_listener, served(Endpoint::Probes), limits));
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(tokio::net::TcpStream::connect(metrics_addr).await.unwrap());
        }
        for path in ["/healthz", "/readyz"] {
            let answer = tokio::time::timeout(Duration::from_secs(1), get(probes_addr, path))
                .await
                .expect("a probe waited behind the scrapers");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let answer = get(probes_addr, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "probes only: {answer}");
        drop(held);
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_watches_and_leadership() {
        let without_election = Health::new(None);
        assert!(without_election.readiness().is_err());
        without_election.set_watches_established(true);
        assert!(without_election.readiness().is_ok());

        let standby = Health::new(Some(Duration::from_secs(5)));
        assert_eq!(
            standby.readiness(),
            Err("leader election cannot reach the Lease")
        );
        standby.lease_checked();
        assert_eq!(standby.readiness(), Ok("standing by"));
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(
            standby.readiness().is_err(),
            "stale lease checks make it unready"
        );
        standby.set_leading(true);
        assert_eq!(standby.readiness(), Err("watches not established yet"));
        standby.set_watches_established(true);
        assert!(standby.readiness().is_ok());
    }
}
