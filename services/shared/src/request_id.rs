//! Idempotent writes (AIP-155): a write carries a `request_id`, and a retry
//! with the same id gets the first call's result instead of doing the work
//! twice. Long operations record their request id with what they create (so
//! replays survive a restart); short writes replay from [`RequestLog`], a
//! bounded in-memory log of recent results.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Longest accepted request id.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A request id that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "request_id must be at most 128 printable ASCII characters (a UUID is a good choice); got {0} bytes"
)]
pub struct InvalidRequestId(pub usize);

/// A validated request id; `None` when the caller sent none (no replay).
pub fn parse(request_id: &str) -> Result<Option<String>, InvalidRequestId> {
    if request_id.is_empty() {
        return Ok(None);
    }
    if request_id.len() > MAX_REQUEST_ID_BYTES || !request_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(InvalidRequestId(request_id.len()));
    }
    Ok(Some(request_id.to_owned()))
}

/// The results of the most recent writes by request id, oldest dropped first.
/// Keys are scoped by the caller (such as `"promote/<index>/<id>"`), so an id
/// reused for another operation never replays a foreign result.
#[derive(Debug)]
pub struct RequestLog<V> {
    capacity: usize,
    inner: Mutex<LogInner<V>>,
}

#[derive(Debug)]
struct LogInner<V> {
    results: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V: Clone> RequestLog<V> {
    /// A log that remembers the last `capacity` results.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(LogInner {
                results: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The recorded result of `key`, if any.
    pub fn get(&self, key: &str) -> Option<V> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.results.get(key).cloned()
    }

    /// Records the result of `key`.
    pub fn record(&self, key: String, value: V) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.results.insert(key.clone(), value).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.results.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("7c9e-1"), Ok(Some("7c9e-1".to_owned())));
        assert!(parse("has space").is_err());
        assert!(parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn log_replays_and_forgets_the_oldest() {
        let log = RequestLog::new(2);
        log.record("a".into(), 1);
        log.record("b".into(), 2);
        assert_eq!(log.get("a"), Some(1));
        log.record("c".into(), 3);
        assert_eq!(log.get("a"), None);
        assert_eq!((log.get("b"), log.get("c")), (Some(2), Some(3)));
    }
}
