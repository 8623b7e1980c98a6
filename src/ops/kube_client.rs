//! The Kubernetes client the controller talks through, polite to a shared API server: a
//! client-side rate limit as client-go's (a token bucket: `qps` requests a second, up to `burst`
//! at once), answers 429, 503 and 504 retried no sooner than the server's `Retry-After`, and
//! every attempt counted by verb and status code. Requests other than watches are also limited
//! in number at once, to a second's worth: kube speaks HTTP/1.1, one connection per request in
//! flight, so an API server that stops answering would otherwise be sent a new connection for
//! each paced request (thousands in a minute, each with its buffers in the controller and a TLS
//! handshake on the server), where client-go multiplexes one HTTP/2 connection.
//!
//! The order matters: the retry sits outside the rate limit, so each retry takes a token of its
//! own, and outside the count, so a 429 shows even when its retry succeeds.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;
use tower::{BoxError, Service, ServiceExt};

/// How fast the controller may send requests to the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestRate {
    /// Requests a second, sustained.
    pub qps: f64,
    /// Requests sent at once after a quiet spell.
    pub burst: u32,
}

/// Told of every attempt the client makes.
pub trait RequestObserver: Send + Sync {
    /// `verb` is the Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `other`); `code` the HTTP status, 0 when no answer came; `waited` the time spent
    /// waiting for the rate limit.
    fn request_finished(&self, verb: &'static str, code: u16, waited: Duration);
}

/// Retries of one request answered 429, 503 or 504: backoff from 250 ms doubling to 30 s, or the
/// server's `Retry-After` when that is later, at most eight times (a little over a minute in
/// all), so a write that meets a busy API server still lands with the verdict it carries.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(250), Duration::from_secs(30), 8, true)
        .expect("the backoff's bounds are in order")
}

/// Requests other than watches in flight at once, each on a connection of its own (about
/// 30 KiB of buffers in the controller): a second's worth of the rate, so that only answers
/// slower than a second slow the client, within bounds (the default 100 requests a second
/// allows 100; no rate allows the most).
pub fn in_flight(rate: Option<RequestRate>) -> usize {
    const FEWEST: usize = 32;
    const MOST: usize = 1024;
    match rate {
        Some(rate) => (rate.qps.ceil() as usize).clamp(FEWEST, MOST),
        None => MOST,
    }
}

/// A client from `config`, sending at most `rate` (none: unlimited) and reporting to `observer`.
pub fn connect(
    mut config: Config,
    rate: Option<RequestRate>,
    observer: Arc<dyn RequestObserver>,
) -> Result<Client, kube::Error> {
    // Retried here instead, through the rate limit and the count.
    config.default_retry = false;
    let builder = ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&PaceLayer::new(rate, observer))
        .with_layer(&RetryLayer::new(retry_policy()))
        .build())
}

/// Puts [`Paced`] around a service.
#[derive(Clone)]
pub struct PaceLayer {
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    in_flight: Arc<Semaphore>,
    observer: Arc<dyn RequestObserver>,
}

impl PaceLayer {
    pub fn new(rate: Option<RequestRate>, observer: Arc<dyn RequestObserver>) -> Self {
        Self::with_in_flight(rate, in_flight(rate), observer)
    }

    /// As [`PaceLayer::new`], with `in_flight` requests other than watches at once.
    pub fn with_in_flight(
        rate: Option<RequestRate>,
        in_flight: usize,
        observer: Arc<dyn RequestObserver>,
    ) -> Self {
        let bucket = rate.map(|rate| Arc::new(Mutex::new(TokenBucket::new(rate, Instant::now()))));
        Self {
            bucket,
            in_flight: Arc::new(Semaphore::new(in_flight.max(1))),
            observer,
        }
    }
}

impl<S> tower::Layer<S> for PaceLayer {
    type Service = Paced<S>;

    fn layer(&self, inner: S) -> Paced<S> {
        Paced {
            inner,
            bucket: self.bucket.clone(),
            in_flight: self.in_flight.clone(),
            observer: self.observer.clone(),
        }
    }
}

/// Waits for a token and a permit in flight, then sends, then counts the answer; the permit is
/// held until the answer's body is read (the connection is busy until then).
#[derive(Clone)]
pub struct Paced<S> {
    inner: S,
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    in_flight: Arc<Semaphore>,
    observer: Arc<dyn RequestObserver>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<Body>> for Paced<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    B: Send + 'static,
{
    type Response = Response<Held<B>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<Held<B>>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The inner service is made ready after the wait, not before: a request waiting for its
        // token must not hold a permit in the buffer that a watch or a lease renewal needs.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let verb = verb_of(&request);
        // A watch is one long request that keeps the caches alive; pacing it spreads nothing.
        let wait = match &self.bucket {
            Some(bucket) if verb != "watch" => bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(Instant::now()),
            _ => Duration::ZERO,
        };
        let mut inner = self.inner.clone();
        let observer = self.observer.clone();
        let bucket = self.bucket.clone();
        let in_flight = (verb != "watch").then(|| self.in_flight.clone());
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let permit = match in_flight {
                // The semaphore is never closed.
                Some(in_flight) => in_flight.acquire_owned().await.ok(),
                None => None,
            };
            let answer = async { inner.ready().await?.call(request).await }.await;
            let code = answer
                .as_ref()
                .map_or(0, |response| response.status().as_u16());
            if code == 429
                && let Some(bucket) = bucket
            {
                bucket
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .spend_burst();
            }
            observer.request_finished(verb, code, wait);
            answer
                .map(|response| response.map(|body| Held { body, permit }))
                .map_err(Into::into)
        })
    }
}

/// An answer's body holding its request's permit in flight until it is read or dropped.
pub struct Held<B> {
    body: B,
    permit: Option<OwnedSemaphorePermit>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The Kubernetes verb of a request, from the name kube gives each call.
fn verb_of(request: &Request<Body>) -> &'static str {
    let name = request
        .extensions()
        .get::<&'static str>()
        .copied()
        .unwrap_or("");
    let prefixes = [
        ("watch", "watch"),
        ("list", "list"),
        ("get", "get"),
        ("create", "create"),
        ("replace", "update"),
        ("patch", "patch"),
        ("delete", "delete"),
    ];
    prefixes
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or("other", |(_, verb)| verb)
}

/// client-go's token bucket, by reservation: each request takes a token; one that finds none is
/// given the time its token will have accrued, so waiting requests go in order, `1/qps` apart.
#[derive(Debug)]
pub struct TokenBucket {
    rate: RequestRate,
    /// Below zero: tokens already promised to waiting requests.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// Full: the first `burst` requests go at once.
    pub fn new(rate: RequestRate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst.max(1)),
            updated: now,
        }
    }

    /// The API server is turning requests away: what is left of the burst is given up, so that
    /// the requests behind go `1/qps` apart instead of all at once.
    pub fn spend_burst(&mut self) {
        self.tokens = self.tokens.min(0.0);
    }

    /// Takes a token; how long to wait before sending.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let burst = f64::from(self.rate.burst.max(1));
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.qps).min(burst);
        self.updated = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.qps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::Layer;
    use tower_test::mock;

    #[derive(Default)]
    struct Seen(Mutex<Vec<(&'static str, u16, Duration)>>);

    impl RequestObserver for Seen {
        fn request_finished(&self, verb: &'static str, code: u16, waited: Duration) {
            self.0.lock().unwrap().push((verb, code, waited));
        }
    }

    fn named(verb: &'static str) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        request.extensions_mut().insert(verb);
        request
    }

    #[test]
    fn a_seconds_worth_of_requests_may_be_in_flight_within_bounds() {
        let rate = |qps| Some(RequestRate { qps, burst: 1 });
        let permits = [rate(0.5), rate(100.0), rate(500.5), rate(1e9), None].map(in_flight);
        assert_eq!(permits, [32, 100, 501, 1024, 1024]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_and_the_rest_follow_one_qps_apart() {
        let rate = RequestRate {
            qps: 10.0,
            burst: 5,
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate, start);
        let waits: Vec<_> = (0..8).map(|_| bucket.reserve(start)).collect();
        assert_eq!(waits[..5], [Duration::ZERO; 5]);
        assert_eq!(waits[5..], [100, 200, 300].map(Duration::from_millis));
        // After a quiet second the bucket holds `burst` again, never more.
        let later = start + Duration::from_secs(10);
        let waits: Vec<_> = (0..6).map(|_| bucket.reserve(later)).collect();
        assert_eq!(waits[..5], [Duration::ZERO; 5]);
        assert_eq!(waits[5], Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_their_token_but_watches_do_not() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Seen::default());
        let rate = RequestRate { qps: 2.0, burst: 1 };
        let mut paced = PaceLayer::new(Some(rate), seen.clone()).layer(service);
        let start = Instant::now();
        let first = tokio::spawn(paced.call(named("patch_status")));
        let second = tokio::spawn(paced.call(named("create")));
        let watch = tokio::spawn(paced.call(named("watch")));
        let mut arrivals = Vec::new();
        for _ in 0..3 {
            let (request, respond) = handle.next_request().await.unwrap();
            let name = *request.extensions().get::<&'static str>().unwrap();
            arrivals.push((name, start.elapsed()));
            respond.send_response(Response::new(Body::empty()));
        }
        for task in [first, second, watch] {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            arrivals,
            [
                ("patch_status", Duration::ZERO),
                ("watch", Duration::ZERO),
                ("create", Duration::from_millis(500)),
            ]
        );
        let mut verbs: Vec<_> = seen.0.lock().unwrap().iter().map(|s| (s.0, s.1)).collect();
        verbs.sort();
        assert_eq!(verbs, [("create", 200), ("patch", 200), ("watch", 200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_are_bounded_until_their_answers_are_read_but_watches_are_not() {
        use http_body_util::BodyExt;
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let paced = PaceLayer::with_in_flight(None, 2, Arc::new(Seen::default())).layer(service);
        let mut calls: Vec<_> = (0..3)
            .map(|_| tokio::spawn(paced.clone().call(named("get"))))
            .collect();
        let (_, first) = handle.next_request().await.unwrap();
        let (_, _second) = handle.next_request().await.unwrap();
        let quiet = Duration::from_secs(5);
        let waits = tokio::time::timeout(quiet, handle.next_request()).await;
        assert!(waits.is_err(), "a third request went out");
        // A watch never waits for a permit.
        let _watch = tokio::spawn(paced.clone().call(named("watch")));
        let (watch, _) = handle.next_request().await.unwrap();
        assert_eq!(watch.extensions().get::<&str>(), Some(&"watch"));

        // Answered, but its body unread: the connection is still busy.
        first.send_response(Response::new(Body::from(b"answer".to_vec())));
        let (done, at, rest) = futures::future::select_all(calls.drain(..)).await;
        let answer = done.unwrap().unwrap();
        let waits = tokio::time::timeout(quiet, handle.next_request()).await;
        assert!(waits.is_err(), "went out before the body was read");
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"answer");
        let (third, _) = handle.next_request().await.unwrap();
        assert_eq!(third.extensions().get::<&str>(), Some(&"get"));
        drop((at, rest));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_retried_after_the_servers_retry_after_and_counted() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Seen::default());
        let stack = tower::ServiceBuilder::new()
            .layer(RetryLayer::new(retry_policy()))
            .layer(PaceLayer::new(None, seen.clone()))
            .service(tower::buffer::Buffer::new(service, 8));
        let start = Instant::now();
        let call = tokio::spawn(stack.oneshot(named("patch_status")));
        let (_, respond) = handle.next_request().await.unwrap();
        let busy = Response::builder()
            .status(429)
            .header("Retry-After", "3")
            .body(Body::empty())
            .unwrap();
        respond.send_response(busy);
        let (_, respond) = handle.next_request().await.unwrap();
        let retried_after = start.elapsed();
        respond.send_response(Response::new(Body::empty()));
        let answer = call.await.unwrap().unwrap();
        assert_eq!(answer.status(), 200);
        assert!(
            retried_after >= Duration::from_secs(3),
            "retried after {retried_after:?}, before the server's Retry-After of 3 s"
        );
        let codes: Vec<_> = seen.0.lock().unwrap().iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(codes, [("patch", 429), ("patch", 200)]);
    }
}
