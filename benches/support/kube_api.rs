//! A loopback Kubernetes API, in memory, for one thing the real kube-apiserver cannot do on this
//! machine: measure the controller alone. The benchmark runs against the real API server by
//! default (`--api real`); on these two cores the API server and etcd then take CPU from the
//! controller and the emulator, so every number includes their cost. `--api stand-in` takes
//! them out, to see the controller's own ceiling.
//!
//! It serves exactly what the scale benchmark's requests need, and no more: core/v1 Secrets
//! (metadata-only lists and watches too) and Namespaces, events.k8s.io/v1 Events, and the
//! custom resources of the CRD files it is given; list (paged) and watch from a resourceVersion
//! (410 Gone once the history no longer reaches back), GET, POST, merge patch, and server-side
//! apply with the manager's removed fields pruned; 409 on a stale resourceVersion; the
//! generation bumped on spec changes only; a separate /status subresource; label selectors
//! (equality and set-based) and field selectors on metadata.name and metadata.namespace. No
//! schema validation, deletion, finalizers or garbage collection: the benchmark deletes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One kind of object the server serves.
#[derive(Clone, Debug)]
struct ResourceType {
    group: String,
    version: String,
    plural: String,
    kind: String,
    status_subresource: bool,
    /// Custom resources get metadata.generation; Secrets and Events do not.
    generation: bool,
}

impl ResourceType {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

type ObjectKey = (usize, String, String);

#[derive(Clone, Debug)]
struct WatchEvent {
    resource_version: u64,
    type_index: usize,
    namespace: String,
    kind: &'static str,
    object: Value,
}

/// A request as seen: who made it, the verb and the resource (with subresource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// False for the benchmark's own requests (made with the `x-e2e-client` header).
    pub by_controller: bool,
    pub verb: String,
    pub resource: String,
}

struct State {
    types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    resource_version: u64,
    history: VecDeque<WatchEvent>,
    /// Events older than this were compacted: watching from before answers 410 Gone.
    compacted_before: u64,
    /// Leaf paths each field manager last applied, per object and subresource.
    applied: HashMap<(ObjectKey, String, bool), BTreeSet<Vec<String>>>,
    requests: Vec<RecordedRequest>,
}

/// The running server and the test's handle on it.
pub struct FakeKubeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    close_watches: watch::Sender<u64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

static UID_COUNTER: AtomicU64 = AtomicU64::new(1);
const HISTORY_LIMIT: usize = 50_000;

impl FakeKubeApi {
    /// Starts on 127.0.0.1:0, serving the built-in types and the CRDs in `crd_files`.
    pub async fn start(crd_files: &[&Path]) -> Self {
        let mut types = vec![
            builtin("", "v1", "secrets", "Secret"),
            builtin("", "v1", "namespaces", "Namespace"),
            builtin("events.k8s.io", "v1", "events", "Event"),
        ];
        for file in crd_files {
            types.extend(read_crd(file));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            types,
            objects: BTreeMap::new(),
            resource_version: 1000,
            history: VecDeque::new(),
            compacted_before: 0,
            applied: HashMap::new(),
            requests: Vec::new(),
        }));
        let (events, _) = broadcast::channel(65_536);
        let (close_watches, _) = watch::channel(0u64);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let server = Server {
            state: state.clone(),
            events: events.clone(),
            close_watches: close_watches.subscribe(),
        };
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            close_watches,
            stop: Some(stop),
        }
    }

    /// Writes a kubeconfig pointing at this server into `dir`; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: loopback\n  cluster:\n    server: http://{}\ncontexts:\n- name: loopback\n  context:\n    cluster: loopback\n    user: loopback\n    namespace: default\ncurrent-context: loopback\nusers:\n- name: loopback\n  user: {{}}\n",
            self.addr
        );
        std::fs::write(&path, config).unwrap();
        path
    }

    /// A kube client for the test's own requests, marked so they are not taken for the
    /// controller's.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        config.headers.push((
            http::HeaderName::from_static("x-e2e-client"),
            http::HeaderValue::from_static("test"),
        ));
        kube::Client::try_from(config).unwrap()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Ends every open watch stream.
        self.close_watches
            .send_modify(|generation| *generation += 1);
    }
}

fn builtin(group: &str, version: &str, plural: &str, kind: &str) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        kind: kind.into(),
        status_subresource: false,
        generation: false,
    }
}

fn read_crd(path: &Path) -> Vec<ResourceType> {
    let text = std::fs::read_to_string(path).unwrap();
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    let spec = &crd["spec"];
    spec["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|version| version["served"].as_bool().unwrap_or(true))
        .map(|version| ResourceType {
            group: spec["group"].as_str().unwrap().into(),
            version: version["name"].as_str().unwrap().into(),
            plural: spec["names"]["plural"].as_str().unwrap().into(),
            kind: spec["names"]["kind"].as_str().unwrap().into(),
            status_subresource: version["subresources"]["status"].is_object(),
            generation: true,
        })
        .collect()
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Server {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    close_watches: watch::Receiver<u64>,
}

/// What a request path names.
struct Target {
    type_index: usize,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

type Reply = Result<(StatusCode, Value), (StatusCode, String, &'static str)>;

impl Server {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let query: HashMap<String, String> =
            form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let metadata_only = parts
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let Some(target) = self.resolve(parts.uri.path()) else {
            return status_response(
                StatusCode::NOT_FOUND,
                "the server could not find the requested resource",
                "NotFound",
            );
        };
        let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let by_controller = !parts.headers.contains_key("x-e2e-client");
        self.record(&parts.method, &target, watching, by_controller);
        if watching {
            return self.watch(&target, &query, metadata_only);
        }
        let reply = match (&parts.method, &target.name) {
            (&Method::GET, None) => self.list(&target, &query, metadata_only),
            (&Method::GET, Some(name)) => self.get(&target, name),
            (&Method::POST, None) => self.create(&target, &body),
            (&Method::PATCH, Some(name)) => {
                self.patch(&target, name, &body, &content_type, &query, by_controller)
            }
            _ => Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".into(),
                "MethodNotAllowed",
            )),
        };
        match reply {
            Ok((status, value)) => json_response(status, &value),
            Err((status, message, reason)) => status_response(status, &message, reason),
        }
    }

    fn record(&self, method: &Method, target: &Target, watching: bool, by_controller: bool) {
        let mut state = lock(&self.state);
        let resource_type = &state.types[target.type_index];
        let verb = match (method, target.name.is_some(), watching) {
            (_, _, true) => "watch",
            (&Method::GET, true, _) => "get",
            (&Method::GET, false, _) => "list",
            (&Method::POST, _, _) => "create",
            (&Method::PATCH, _, _) => "patch",
            _ => "other",
        };
        let resource = if target.status {
            format!("{}/status", resource_type.plural)
        } else {
            resource_type.plural.clone()
        };
        let record = RecordedRequest {
            by_controller,
            verb: verb.into(),
            resource,
        };
        state.requests.push(record);
    }

    fn resolve(&self, path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
                (Some(namespace.to_string()), rest)
            }
            _ => (None, rest),
        };
        let (plural, name, sub) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(*sub)),
            _ => return None,
        };
        let state = lock(&self.state);
        let type_index = state
            .types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)?;
        let status = match sub {
            None => false,
            Some("status") if state.types[type_index].status_subresource => true,
            Some(_) => return None,
        };
        Some(Target {
            type_index,
            namespace,
            name,
            status,
        })
    }

    fn list(&self, target: &Target, query: &HashMap<String, String>, metadata_only: bool) -> Reply {
        let state = lock(&self.state);
        let resource_type = &state.types[target.type_index];
        let selector = Selector::parse(
            query.get("labelSelector").map_or("", String::as_str),
            query.get("fieldSelector").map_or("", String::as_str),
        );
        let matching: Vec<&Value> = state
            .objects
            .iter()
            .filter(|((index, namespace, _), _)| {
                *index == target.type_index
                    && target
                        .namespace
                        .as_ref()
                        .is_none_or(|wanted| wanted == namespace)
            })
            .map(|(_, object)| object)
            .filter(|object| selector.matches(object))
            .collect();
        let offset: usize = query
            .get("continue")
            .and_then(|token| token.split_once(':'))
            .and_then(|(_, offset)| offset.parse().ok())
            .unwrap_or(0);
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|&l| l > 0)
            .unwrap_or(usize::MAX);
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|object| present(object, metadata_only))
            .collect();
        let mut metadata = json!({"resourceVersion": state.resource_version.to_string()});
        if offset + page.len() < matching.len() {
            metadata["continue"] = json!(format!(
                "{}:{}",
                state.resource_version,
                offset + page.len()
            ));
        }
        let (api_version, kind) = if metadata_only {
            (
                "meta.k8s.io/v1".to_owned(),
                "PartialObjectMetadataList".to_owned(),
            )
        } else {
            (
                resource_type.api_version(),
                format!("{}List", resource_type.kind),
            )
        };
        Ok((
            StatusCode::OK,
            json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": page}),
        ))
    }

    fn get(&self, target: &Target, name: &str) -> Reply {
        let state = lock(&self.state);
        let key = object_key(target, name);
        state
            .objects
            .get(&key)
            .cloned()
            .map(|object| (StatusCode::OK, object))
            .ok_or_else(|| not_found(&state.types[target.type_index], name))
    }

    fn create(&self, target: &Target, body: &[u8]) -> Reply {
        let mut object: Value = serde_json::from_slice(body).map_err(bad_request)?;
        let name = object["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "metadata.name is required".to_owned(),
                    "Invalid",
                )
            })?;
        let mut state = lock(&self.state);
        let key = object_key(target, &name);
        if state.objects.contains_key(&key) {
            let kind = state.types[target.type_index].plural.clone();
            return Err((
                StatusCode::CONFLICT,
                format!("{kind} \"{name}\" already exists"),
                "AlreadyExists",
            ));
        }
        object["metadata"]["name"] = json!(name);
        let created = self.insert_new(&mut state, target, key, object);
        Ok((StatusCode::CREATED, created))
    }

    fn insert_new(
        &self,
        state: &mut State,
        target: &Target,
        key: ObjectKey,
        mut object: Value,
    ) -> Value {
        let resource_type = state.types[target.type_index].clone();
        object["apiVersion"] = json!(resource_type.api_version());
        object["kind"] = json!(resource_type.kind);
        let metadata = object["metadata"]
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut metadata = Value::Object(metadata);
        if let Some(namespace) = &target.namespace {
            metadata["namespace"] = json!(namespace);
        }
        metadata["uid"] = json!(format!(
            "uid-{:08}",
            UID_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        metadata["creationTimestamp"] = json!(now_rfc3339());
        if resource_type.generation {
            metadata["generation"] = json!(1);
        }
        if let Some(map) = metadata.as_object_mut() {
            map.remove("resourceVersion");
        }
        object["metadata"] = metadata;
        if resource_type.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        fold_string_data(&mut object);
        self.store(state, key, object, "ADDED")
    }

    /// Stores an object with a new resourceVersion and tells the watchers.
    fn store(
        &self,
        state: &mut State,
        key: ObjectKey,
        mut object: Value,
        kind: &'static str,
    ) -> Value {
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        state.objects.insert(key.clone(), object.clone());
        self.announce(state, &key, kind, object.clone());
        object
    }

    fn announce(&self, state: &mut State, key: &ObjectKey, kind: &'static str, object: Value) {
        let event = WatchEvent {
            resource_version: state.resource_version,
            type_index: key.0,
            namespace: key.1.clone(),
            kind,
            object,
        };
        state.history.push_back(event.clone());
        if state.history.len() > HISTORY_LIMIT
            && let Some(dropped) = state.history.pop_front()
        {
            state.compacted_before = dropped.resource_version + 1;
        }
        let _ = self.events.send(Arc::new(event));
    }

    /// Applies a new version of an existing object: status and spec kept apart, generation
    /// bumped on spec changes.
    fn update(
        &self,
        state: &mut State,
        target: &Target,
        key: ObjectKey,
        current: Value,
        incoming: Value,
    ) -> Value {
        let resource_type = state.types[target.type_index].clone();
        let mut next = if target.status {
            let mut next = current.clone();
            next["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            next
        } else {
            let mut next = incoming;
            // System fields are the server's; metadata the client may change is kept.
            for field in [
                "uid",
                "creationTimestamp",
                "generation",
                "namespace",
                "name",
            ] {
                match current["metadata"].get(field) {
                    Some(value) => next["metadata"][field] = value.clone(),
                    None => {
                        if let Some(map) = next["metadata"].as_object_mut() {
                            map.remove(field);
                        }
                    }
                }
            }
            if resource_type.status_subresource {
                match current.get("status") {
                    Some(status) => next["status"] = status.clone(),
                    None => {
                        if let Some(map) = next.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            next["apiVersion"] = current["apiVersion"].clone();
            next["kind"] = current["kind"].clone();
            fold_string_data(&mut next);
            next
        };
        if resource_type.generation && !target.status && spec_of(&current) != spec_of(&next) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        if without_resource_version(&current) == without_resource_version(&next) {
            return current;
        }
        self.store(state, key, next, "MODIFIED")
    }

    fn patch(
        &self,
        target: &Target,
        name: &str,
        body: &[u8],
        content_type: &str,
        query: &HashMap<String, String>,
        by_controller: bool,
    ) -> Reply {
        let patch: Value = if content_type.starts_with("application/apply-patch+yaml") {
            serde_yaml::from_slice(body).map_err(bad_request)?
        } else {
            serde_json::from_slice(body).map_err(bad_request)?
        };
        let mut state = lock(&self.state);
        let key = object_key(target, name);
        let current = state.objects.get(&key).cloned();
        if content_type.starts_with("application/merge-patch+json") {
            let Some(current) = current else {
                return Err(not_found(&state.types[target.type_index], name));
            };
            check_resource_version(&current, &patch)?;
            let mut next = current.clone();
            json_patch::merge(&mut next, &patch);
            let updated = self.update(&mut state, target, key, current, next);
            return Ok((StatusCode::OK, updated));
        }
        if !content_type.starts_with("application/apply-patch+yaml") {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("patch type {content_type} is not supported here"),
                "UnsupportedMediaType",
            ));
        }
        let Some(manager) = query.get("fieldManager").cloned() else {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                "fieldManager is required for apply patches".into(),
                "Invalid",
            ));
        };
        let applied_paths = leaf_paths(&patch);
        let previous_paths = state
            .applied
            .insert((key.clone(), manager, target.status), applied_paths.clone())
            .unwrap_or_default();
        let Some(current) = current else {
            if target.status {
                return Err(not_found(&state.types[target.type_index], name));
            }
            // The API server authorizes an apply that creates as a create, too.
            let record = RecordedRequest {
                by_controller,
                verb: "create".into(),
                resource: state.types[target.type_index].plural.clone(),
            };
            state.requests.push(record);
            let created = self.insert_new(&mut state, target, key, patch);
            return Ok((StatusCode::CREATED, created));
        };
        check_resource_version(&current, &patch)?;
        let mut next = current.clone();
        // Fields this manager applied before and no longer applies are removed, as SSA does.
        for path in previous_paths.difference(&applied_paths) {
            remove_path(&mut next, path);
        }
        apply_merge(&mut next, &patch);
        let updated = self.update(&mut state, target, key, current, next);
        Ok((StatusCode::OK, updated))
    }

    fn watch(
        &self,
        target: &Target,
        query: &HashMap<String, String>,
        metadata_only: bool,
    ) -> Response<Body> {
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(300), Duration::from_secs);
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let selector = Selector::parse(
            query.get("labelSelector").map_or("", String::as_str),
            query.get("fieldSelector").map_or("", String::as_str),
        );
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1024);
        let mut live = self.events.subscribe();
        let (backlog, gone, current) = {
            let state = lock(&self.state);
            let gone = since != 0 && since < state.compacted_before;
            let backlog: Vec<Arc<WatchEvent>> = if since == 0 {
                // "Any" semantics: start with the current objects as ADDED.
                state
                    .objects
                    .iter()
                    .filter(|((index, namespace, _), _)| {
                        *index == target.type_index
                            && target.namespace.as_ref().is_none_or(|n| n == namespace)
                    })
                    .map(|((index, namespace, _), object)| {
                        Arc::new(WatchEvent {
                            resource_version: object["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0),
                            type_index: *index,
                            namespace: namespace.clone(),
                            kind: "ADDED",
                            object: object.clone(),
                        })
                    })
                    .collect()
            } else {
                state
                    .history
                    .iter()
                    .filter(|event| event.resource_version > since)
                    .cloned()
                    .map(Arc::new)
                    .collect()
            };
            (backlog, gone, state.resource_version)
        };
        let type_index = target.type_index;
        let namespace = target.namespace.clone();
        let mut closer = self.close_watches.clone();
        closer.mark_unchanged();
        let api_version = lock(&self.state).types[type_index].api_version();
        let kind = lock(&self.state).types[type_index].kind.clone();
        tokio::spawn(async move {
            let frame = |event: &str, object: Value| {
                Bytes::from(format!("{}\n", json!({"type": event, "object": object})))
            };
            if gone {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
                let _ = sender.send(frame("ERROR", status)).await;
                return;
            }
            let relevant = |event: &WatchEvent| {
                event.type_index == type_index
                    && namespace.as_ref().is_none_or(|n| n == &event.namespace)
                    && selector.matches(&event.object)
            };
            let mut last_sent = since;
            for event in backlog.iter().filter(|e| relevant(e)) {
                if sender
                    .send(frame(event.kind, present(&event.object, metadata_only)))
                    .await
                    .is_err()
                {
                    return;
                }
                last_sent = last_sent.max(event.resource_version);
            }
            last_sent = last_sent.max(current);
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut bookmark_timer = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = closer.changed() => return,
                    _ = bookmark_timer.tick(), if bookmarks => {
                        let bookmark = json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": last_sent.to_string()}});
                        if sender.send(frame("BOOKMARK", bookmark)).await.is_err() { return; }
                    }
                    received = live.recv() => match received {
                        Ok(event) => {
                            if event.resource_version <= last_sent || !relevant(&event) { continue; }
                            last_sent = event.resource_version;
                            if sender.send(frame(event.kind, present(&event.object, metadata_only))).await.is_err() { return; }
                        }
                        // A watcher too slow to keep up is cut off, as the API server does.
                        Err(_) => return,
                    }
                }
            }
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), receiver))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
            .unwrap()
    }
}

fn object_key(target: &Target, name: &str) -> ObjectKey {
    (
        target.type_index,
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    )
}

/// What a watch or list shows: the object, or only its metadata for metadata-only requests.
fn present(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
    } else {
        object.clone()
    }
}

/// Everything but metadata and status: what bumps the generation.
fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    copy
}

fn without_resource_version(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy["metadata"].as_object_mut() {
        map.remove("resourceVersion");
        map.remove("managedFields");
    }
    copy
}

fn check_resource_version(
    current: &Value,
    incoming: &Value,
) -> Result<(), (StatusCode, String, &'static str)> {
    match incoming["metadata"]["resourceVersion"].as_str() {
        Some(wanted) if Some(wanted) != current["metadata"]["resourceVersion"].as_str() => Err((
            StatusCode::CONFLICT,
            "the object has been modified; please apply your changes to the latest version and try again".into(),
            "Conflict",
        )),
        _ => Ok(()),
    }
}

/// Secrets written with stringData store it base64-encoded in data, as the API server does.
fn fold_string_data(object: &mut Value) {
    let Some(string_data) = object
        .as_object_mut()
        .and_then(|map| map.remove("stringData"))
    else {
        return;
    };
    use base64::Engine;
    if let Some(entries) = string_data.as_object() {
        for (key, value) in entries {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(value.as_str().unwrap_or_default());
            object["data"][key] = json!(encoded);
        }
    }
}

/// Server-side apply of one manager's configuration: maps merge, everything else (lists
/// included, treated atomic here) is replaced.
fn apply_merge(target: &mut Value, applied: &Value) {
    match (target.as_object_mut(), applied.as_object()) {
        (Some(target), Some(applied)) => {
            for (key, value) in applied {
                if key == "resourceVersion" {
                    continue;
                }
                apply_merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        _ => *target = applied.clone(),
    }
}

fn leaf_paths(value: &Value) -> BTreeSet<Vec<String>> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out.retain(|path| {
        !matches!(
            path.first().map(String::as_str),
            Some("apiVersion" | "kind")
        )
    });
    out
}

fn remove_path(value: &mut Value, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            if let Some(map) = value.as_object_mut() {
                map.remove(last);
            }
        }
        [first, rest @ ..] => {
            if let Some(child) = value.get_mut(first) {
                remove_path(child, rest);
            }
        }
    }
}

/// Label selectors as the API server reads them (`a=b`, `a==b`, `a!=b`, `a in (b,c)`,
/// `a notin (b,c)`, `a`, `!a`) and field selectors on metadata.name and metadata.namespace.
struct Selector {
    labels: Vec<LabelTerm>,
    fields: Vec<(String, String)>,
}

/// One term of a label selector.
enum LabelTerm {
    /// The label's value is one of these (`=`, `==`, `in`).
    In(String, Vec<String>),
    /// The label is absent or its value is none of these (`!=`, `notin`).
    NotIn(String, Vec<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    Absent(String),
}

impl LabelTerm {
    fn parse(term: &str) -> Self {
        let set = |values: &str| -> Vec<String> {
            let values = values.trim().trim_start_matches('(').trim_end_matches(')');
            values.split(',').map(|v| v.trim().to_owned()).collect()
        };
        if let Some((key, values)) = term.split_once(" notin ") {
            LabelTerm::NotIn(key.trim().into(), set(values))
        } else if let Some((key, values)) = term.split_once(" in ") {
            LabelTerm::In(key.trim().into(), set(values))
        } else if let Some((key, value)) = term.split_once("!=") {
            LabelTerm::NotIn(key.trim().into(), vec![value.trim().into()])
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelTerm::In(key.trim().into(), vec![value.trim().into()])
        } else if let Some(key) = term.strip_prefix('!') {
            LabelTerm::Absent(key.trim().into())
        } else {
            LabelTerm::Exists(term.trim().into())
        }
    }

    fn matches(&self, labels: &Value) -> bool {
        let value = |key: &str| labels.get(key).and_then(Value::as_str);
        match self {
            LabelTerm::In(key, values) => value(key).is_some_and(|v| values.iter().any(|w| w == v)),
            LabelTerm::NotIn(key, values) => {
                value(key).is_none_or(|v| values.iter().all(|w| w != v))
            }
            LabelTerm::Exists(key) => value(key).is_some(),
            LabelTerm::Absent(key) => value(key).is_none(),
        }
    }
}

/// The terms of a label selector: commas inside `( )` belong to a set.
fn label_terms(selector: &str) -> Vec<LabelTerm> {
    let (mut terms, mut current, mut depth) = (Vec::new(), String::new(), 0u32);
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    terms.push(current);
    terms
        .iter()
        .map(|term| term.trim())
        .filter(|term| !term.is_empty())
        .map(LabelTerm::parse)
        .collect()
}

impl Selector {
    fn parse(labels: &str, fields: &str) -> Self {
        let fields = fields
            .split(',')
            .filter_map(|term| term.split_once('='))
            .map(|(key, value)| {
                (
                    key.trim_end_matches('=').trim().to_owned(),
                    value.trim().to_owned(),
                )
            })
            .collect();
        Self {
            labels: label_terms(labels),
            fields,
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|term| term.matches(labels));
        let fields_ok = self
            .fields
            .iter()
            .all(|(field, value)| match field.as_str() {
                "metadata.name" => object["metadata"]["name"] == value.as_str(),
                "metadata.namespace" => object["metadata"]["namespace"] == value.as_str(),
                _ => true,
            });
        labels_ok && fields_ok
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap()
        .to_string()
}

fn not_found(resource_type: &ResourceType, name: &str) -> (StatusCode, String, &'static str) {
    (
        StatusCode::NOT_FOUND,
        format!("{} \"{name}\" not found", resource_type.plural),
        "NotFound",
    )
}

fn bad_request(error: impl std::fmt::Display) -> (StatusCode, String, &'static str) {
    (StatusCode::BAD_REQUEST, error.to_string(), "BadRequest")
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(Full::new(Bytes::from(
            body.to_string(),
        ))))
        .unwrap()
}

fn status_response(status: StatusCode, message: &str, reason: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": status.as_u16()
    });
    json_response(status, &body)
}
