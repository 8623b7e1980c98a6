//! A mocked Kubernetes API in the kube-rs style: `tower_test::mock::pair` feeds `Client::new`,
//! and the test walks the expected requests in order, asserting each and answering it.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{self, Handle, SendResponse};

/// The test's side of the mocked API.
pub struct MockApi {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// One request received, waiting for its answer.
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Exchange {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: u16, body: Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.send.send_response(response);
    }

    /// Answers 404 Not Found as the API server does.
    pub fn not_found(self) {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "not found", "reason": "NotFound", "code": 404
        });
        self.respond(404, status);
    }

    /// Answers with the request body itself (what an apply or create returns, roughly).
    pub fn echo(self) {
        let body = self.body.clone();
        self.respond(200, body);
    }
}

impl MockApi {
    /// A client talking to this mock.
    pub fn new() -> (Client, MockApi) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), MockApi { handle })
    }

    /// The next request, which must have this method and path.
    pub async fn expect(&mut self, method: &str, path: &str) -> Exchange {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request within 10 s; expected {method} {path}"))
                .unwrap_or_else(|| panic!("the client went away; expected {method} {path}"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let exchange = Exchange {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            },
            send,
        };
        assert_eq!(
            (exchange.method.as_str(), exchange.path.as_str()),
            (method, path),
            "unexpected request (body {})",
            exchange.body
        );
        exchange
    }

    /// An Event POST, answered; returns the Event.
    pub async fn expect_event(&mut self, namespace: &str) -> Value {
        let exchange = self
            .expect(
                "POST",
                &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            )
            .await;
        let event = exchange.body.clone();
        exchange.echo();
        event
    }

    /// Asserts that no further request comes within a short while.
    pub async fn expect_nothing_more(&mut self) {
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(300), self.handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}
