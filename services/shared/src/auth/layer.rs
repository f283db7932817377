//! The tower layer that checks every call's bearer token against the scope
//! its method needs. It sits over `http::Request` rather than in a tonic
//! interceptor because it needs the method path, and one layer in the
//! server builder covers every service without each one opting in.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::Code;
use tonic::body::Body;

use super::audit::{AuditJournal, AuditRecord, target_of};
use super::scope_table::{OPEN_SERVICES, REFLECTION_SERVICES, required_scope, service_of};
use super::{AuthPolicy, SERVICE_TOKEN, Scope, Scopes};

/// Who made a call, put in the request's extensions once the token checked
/// out (handlers read it with `request.extensions().get::<Caller>()`); the
/// token's value itself is removed from the request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name, such as `agent`.
    pub token: Arc<str>,
    /// What the token may do.
    pub scopes: Scopes,
}

/// Installs [`AuthService`] around a server's routes.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    policy: AuthPolicy,
}

impl AuthLayer {
    /// A layer enforcing `policy`.
    pub fn new(policy: AuthPolicy) -> Self {
        Self { policy }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// Answers a call UNAUTHENTICATED or PERMISSION_DENIED itself, or passes it
/// on without its `authorization` header and with a [`Caller`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    policy: AuthPolicy,
}

impl<S, ResBody> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        match check(&self.policy, &mut request) {
            Ok(None) => Box::pin(self.inner.call(request)),
            Ok(Some((journal, mut record))) => {
                // The service made ready by poll_ready is the one to call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move {
                    let (parts, body) = request.into_parts();
                    let (first, body) = peek_first_message(body).await;
                    if let Some(first) = first {
                        record.target = target_of(&record.method, &first);
                    }
                    journal.record(record);
                    inner.call(http::Request::from_parts(parts, body)).await
                })
            }
            Err(status) => {
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// Largest first message read for the audit target; a larger one (an
/// inline upload) is passed on unread and audited without a target.
const PEEK_LIMIT: usize = 64 * 1024;

/// Reads the request's first gRPC message (for the audit target) and gives
/// back a body that replays what was read, then the rest, unchanged.
async fn peek_first_message(mut body: Body) -> (Option<Bytes>, Body) {
    let mut buffered = BytesMut::new();
    let mut held: Vec<Result<Frame<Bytes>, tonic::Status>> = Vec::new();
    let mut message = None;
    let mut ended = false;
    loop {
        if let Some(header) = buffered.get(..5) {
            let compressed = header[0] != 0;
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if compressed || len > PEEK_LIMIT {
                break;
            }
            if let Some(first) = buffered.get(5..5 + len) {
                message = Some(Bytes::copy_from_slice(first));
                break;
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buffered.extend_from_slice(&data),
                Err(frame) => {
                    held.push(Ok(frame));
                    break;
                }
            },
            Some(Err(status)) => {
                held.push(Err(status));
                break;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let replay = (!buffered.is_empty())
        .then(|| Ok(Frame::data(buffered.freeze())))
        .into_iter()
        .chain(held);
    let replay = futures::stream::iter(replay);
    let body = if ended {
        Body::new(http_body_util::StreamBody::new(replay))
    } else {
        let rest = http_body_util::BodyStream::new(body);
        Body::new(http_body_util::StreamBody::new(replay.chain(rest)))
    };
    (message, body)
}

/// What to audit for an allowed call: the journal and the record, whose
/// target is still to be read from the request.
type ToAudit = Option<(AuditJournal, AuditRecord)>;

/// The decision for one call; on success the request has lost its
/// `authorization` header (so no handler can forward the caller's token to
/// a peer) and carries a [`Caller`] when a token was checked.
fn check<B>(policy: &AuthPolicy, request: &mut http::Request<B>) -> Result<ToAudit, tonic::Status> {
    let presented = request.headers_mut().remove(AUTHORIZATION);
    let path = request.uri().path();
    let service = service_of(path);
    if OPEN_SERVICES.contains(&service) || !policy.is_on() {
        return Ok(None);
    }
    let required = if REFLECTION_SERVICES.contains(&service) {
        if !policy.reflection_requires_token {
            return Ok(None);
        }
        Scope::Read
    } else {
        required_scope(path)
    };
    let Some(presented) = presented else {
        return Err(unauthenticated(
            "this server requires a token: send the metadata `authorization: Bearer <token>`",
            "TOKEN_MISSING",
        ));
    };
    let Some(token) = presented.to_str().ok().and_then(bearer) else {
        return Err(unauthenticated(
            "the authorization metadata must be `Bearer <token>`",
            "TOKEN_MALFORMED",
        ));
    };
    // Same answer for every wrong token: nothing tells a guesser how close
    // they came or which names exist.
    let Some(caller) = policy.tokens.authenticate(token) else {
        return Err(unauthenticated(
            "the token is not valid here",
            "TOKEN_INVALID",
        ));
    };
    let audit = policy
        .audit
        .as_ref()
        .filter(|_| required != Scope::Read && &*caller.name != SERVICE_TOKEN)
        .map(|journal| {
            let record = AuditRecord {
                time: chrono::Utc::now(),
                role: String::new(),
                token: caller.name.to_string(),
                method: path.to_owned(),
                scope: required.as_str().to_owned(),
                target: String::new(),
                decision: "allowed".to_owned(),
                request_id: request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            };
            (journal.clone(), record)
        });
    if !caller.scopes.allows(required) {
        if let Some((journal, mut record)) = audit {
            record.decision = "denied".to_owned();
            journal.record(record);
        }
        tracing::info!(
            token = %caller.name,
            method = path,
            required = %required,
            "call refused: scope missing"
        );
        return Err(crate::status::with_error_info(
            Code::PermissionDenied,
            format!(
                "token {:?} lacks the `{required}` scope that {path} needs",
                caller.name
            ),
            "SCOPE_MISSING",
            [
                ("required_scope", required.as_str().to_owned()),
                ("method", path.to_owned()),
            ],
        ));
    }
    request.extensions_mut().insert(Caller {
        token: caller.name,
        scopes: caller.scopes,
    });
    Ok(audit)
}

fn unauthenticated(message: &str, reason: &str) -> tonic::Status {
    crate::status::with_error_info(Code::Unauthenticated, message, reason, [])
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer as _, ServiceExt as _};

    use super::*;
    use crate::auth::Tokens;
    use crate::secrets::SecretString;

    const OWNER: &str = "owner-0123456789abcdef";
    const READER: &str = "reader-0123456789abcdef";
    const AGENT: &str = "agent-0123456789abcdef";

    fn policy(reflection_requires_token: bool) -> AuthPolicy {
        let mut tokens = Tokens::none();
        for (name, scopes, value) in [
            ("owner", vec![Scope::Admin], OWNER),
            ("reader", vec![Scope::Read], READER),
            ("agent", vec![Scope::Read, Scope::Trials], AGENT),
        ] {
            tokens
                .add(name, Scopes::granted_by(scopes), &SecretString::new(value))
                .expect("add");
        }
        AuthPolicy {
            tokens: Arc::new(tokens),
            reflection_requires_token,
            audit: None,
        }
    }

    /// Calls the layer over an inner service that answers 200 and reports
    /// what it saw; returns (grpc-status, the caller's token name, whether
    /// an authorization header reached the inner service).
    async fn call(
        policy: AuthPolicy,
        path: &str,
        authorization: Option<&str>,
    ) -> (Option<tonic::Status>, Option<String>, bool) {
        call_with(policy, path, authorization, Body::empty()).await
    }

    async fn call_with(
        policy: AuthPolicy,
        path: &str,
        authorization: Option<&str>,
        body: Body,
    ) -> (Option<tonic::Status>, Option<String>, bool) {
        let inner = tower::service_fn(|request: http::Request<Body>| async move {
            let caller = request
                .extensions()
                .get::<Caller>()
                .map(|c| c.token.to_string());
            let leaked = request.headers().contains_key(AUTHORIZATION);
            let mut response = http::Response::new(String::new());
            response.extensions_mut().insert((caller, leaked));
            Ok::<_, Infallible>(response)
        });
        let service = AuthLayer::new(policy).layer(inner);
        let mut request = http::Request::builder().uri(format!("http://h{path}"));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let response = service
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("infallible");
        let status = tonic::Status::from_header_map(response.headers());
        let seen = response
            .extensions()
            .get::<(Option<String>, bool)>()
            .cloned();
        match seen {
            Some((caller, leaked)) => (status, caller, leaked),
            None => (status, None, false),
        }
    }

    const PUT: &str = "/lakehouse.storage.v1.StorageService/PutObject";
    const GET: &str = "/lakehouse.storage.v1.StorageService/GetObject";

    #[tokio::test]
    async fn missing_and_wrong_tokens_are_unauthenticated_without_hints() {
        for authorization in [
            None,
            Some("Bearer nope-0123456789abcdef"),
            Some("Bearer owner"),
            Some("Basic b3duZXI6eA=="),
            Some(OWNER),
        ] {
            let (status, caller, _) = call(policy(false), GET, authorization).await;
            let status = status.expect("refused");
            assert_eq!(status.code(), Code::Unauthenticated, "{authorization:?}");
            assert!(caller.is_none());
            for name in ["owner", "reader", "agent"] {
                assert!(!status.message().contains(name), "{}", status.message());
            }
        }
    }

    #[tokio::test]
    async fn a_valid_token_passes_as_its_name_and_is_stripped() {
        let (status, caller, leaked) =
            call(policy(false), PUT, Some(&format!("bearer  {OWNER}"))).await;
        assert!(status.is_none(), "{status:?}");
        assert_eq!(caller.as_deref(), Some("owner"));
        assert!(!leaked, "the caller's token must not reach the handler");
    }

    #[tokio::test]
    async fn wrong_scope_is_permission_denied_naming_the_scope() {
        let (status, _, _) = call(policy(false), PUT, Some(&format!("Bearer {READER}"))).await;
        let status = status.expect("refused");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("`write`"), "{}", status.message());
        assert!(!status.message().contains(READER));
        assert_eq!(
            crate::status::error_reason(&status).as_deref(),
            Some("SCOPE_MISSING")
        );
        assert_eq!(
            crate::status::error_metadata(&status, "required_scope").as_deref(),
            Some("write")
        );
        let (status, _, _) = call(policy(false), GET, Some(&format!("Bearer {READER}"))).await;
        assert!(status.is_none());
    }

    #[tokio::test]
    async fn an_agent_runs_trials_but_cannot_write_or_delete() {
        let agent = format!("Bearer {AGENT}");
        let trial = "/lakehouse.vector.v1.VectorService/RunTrial";
        let delete = "/lakehouse.vector.v1.VectorService/DeleteIndex";
        let search = "/lakehouse.vector.v1.VectorService/Search";
        assert!(call(policy(false), trial, Some(&agent)).await.0.is_none());
        assert!(call(policy(false), search, Some(&agent)).await.0.is_none());
        let denied = call(policy(false), delete, Some(&agent))
            .await
            .0
            .expect("denied");
        assert!(denied.message().contains("`admin`"), "{}", denied.message());
        let denied = call(policy(false), PUT, Some(&agent))
            .await
            .0
            .expect("denied");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn unknown_methods_need_admin() {
        let path = "/lakehouse.storage.v1.StorageService/SomethingNew";
        let (status, _, _) = call(policy(false), path, Some(&format!("Bearer {READER}"))).await;
        assert!(status.expect("denied").message().contains("`admin`"));
        let (status, _, _) = call(policy(false), path, Some(&format!("Bearer {OWNER}"))).await;
        assert!(status.is_none());
    }

    #[tokio::test]
    async fn health_is_always_open_and_reflection_is_configurable() {
        let health = "/grpc.health.v1.Health/Check";
        let reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
        assert!(call(policy(true), health, None).await.0.is_none());
        assert!(call(policy(false), reflection, None).await.0.is_none());
        let gated = call(policy(true), reflection, None).await.0.expect("gated");
        assert_eq!(gated.code(), Code::Unauthenticated);
        let reader = format!("Bearer {READER}");
        assert!(
            call(policy(true), reflection, Some(&reader))
                .await
                .0
                .is_none()
        );
    }

    #[tokio::test]
    async fn without_tokens_everything_passes_but_the_header_is_still_stripped() {
        let (status, caller, leaked) = call(AuthPolicy::off(), PUT, Some("Bearer whatever")).await;
        assert!(status.is_none());
        assert!(caller.is_none());
        assert!(!leaked);
    }

    /// One gRPC frame holding `message`.
    fn grpc_frame(message: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    #[tokio::test]
    async fn writes_are_audited_with_name_target_and_decision_and_the_body_is_intact() {
        use prost::Message as _;
        let store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let journal = AuditJournal::new(store.clone(), "all");
        let mut policy = policy(false);
        policy.audit = Some(journal.clone());
        let delete = lakehouse_proto::storage::v1::DeleteObjectRequest {
            bucket: String::new(),
            key: "notes/a.txt".to_owned(),
        }
        .encode_to_vec();
        let mut wire = grpc_frame(&delete);
        wire.extend(grpc_frame(b"second"));
        // Split mid-header, so the peek must gather frames.
        let (a, b) = wire.split_at(3);
        let chunks: Vec<Result<Frame<Bytes>, tonic::Status>> = vec![
            Ok(Frame::data(Bytes::copy_from_slice(a))),
            Ok(Frame::data(Bytes::copy_from_slice(b))),
        ];
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            chunks,
        )));

        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let inner = {
            let seen = seen.clone();
            tower::service_fn(move |request: http::Request<Body>| {
                let seen = seen.clone();
                async move {
                    let bytes = request
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    seen.lock().expect("lock").push(bytes);
                    Ok::<_, Infallible>(http::Response::new(String::new()))
                }
            })
        };
        let service = AuthLayer::new(policy.clone()).layer(inner);
        let path = "/lakehouse.storage.v1.StorageService/DeleteObject";
        let request = http::Request::builder()
            .uri(format!("http://h{path}"))
            .header(AUTHORIZATION, format!("Bearer {OWNER}"))
            .header("x-request-id", "req-1")
            .body(body)
            .expect("request");
        service.oneshot(request).await.expect("infallible");
        assert_eq!(seen.lock().expect("lock")[0].as_ref(), wire.as_slice());

        // A denied write is audited too; reads are not.
        let (status, _, _) = call(policy.clone(), PUT, Some(&format!("Bearer {READER}"))).await;
        assert!(status.is_some());
        let (status, _, _) = call(policy, GET, Some(&format!("Bearer {READER}"))).await;
        assert!(status.is_none());

        let records = journal.read_all().await.expect("read");
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0].token, "owner");
        assert_eq!(records[0].method, path);
        assert_eq!(records[0].scope, "admin");
        assert_eq!(records[0].target, "key=notes/a.txt");
        assert_eq!(records[0].decision, "allowed");
        assert_eq!(records[0].request_id, "req-1");
        assert_eq!(records[1].token, "reader");
        assert_eq!(records[1].decision, "denied");
        let printed = format!("{records:?}");
        assert!(!printed.contains(OWNER) && !printed.contains(READER));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }
}
