//! The operations endpoint: `/metrics`, `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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

/// Listens on `addr` and serves the endpoint in the background; returns the bound address.
pub async fn start(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, metrics, health));
    Ok(bound)
}

/// Serves the endpoint on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "metrics endpoint: accept failed");
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (metrics, health) = (metrics.clone(), health.clone());
                async move { Ok::<_, Infallible>(route(&request, &metrics, &health)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route<B>(request: &Request<B>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match health.readiness() {
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
