//! The convention every crate follows when turning its error enum into a
//! `tonic::Status`: the code says what kind of failure it is (the caller's
//! mistake, a conflict, a missing dependency, our bug), the message says
//! what to do, and backend text (SQL, S3 XML, credentials) stays in our logs.

use tonic::Code;

/// Whether a code means the caller can fix the call (logged at info), as
/// opposed to a failure on our side (logged at warn).
pub fn is_caller_error(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::Cancelled
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// Records the full cause of a failure (backend text included) on the
/// call's span, so the server's one log line for the failed call carries it
/// while the client gets only the status message.
pub fn record_cause(cause: &dyn std::fmt::Display) {
    tracing::Span::current().record("error.cause", tracing::field::display(cause));
}

/// The status for an RPC that a later milestone implements; it names the
/// feature so the caller knows it is planned, not broken.
pub fn not_yet_implemented(feature: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "{feature} is not implemented yet in this Lakehouse version"
    ))
}

/// `google.rpc.ErrorInfo`'s part of a status: a stable, machine-readable
/// reason (UPPER_SNAKE) and the values a client needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorInfo {
    /// Such as `INDEX_NOT_FOUND`.
    pub reason: String,
    /// Such as the current generation.
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl From<(&str, Vec<(&'static str, String)>)> for ErrorInfo {
    fn from((reason, metadata): (&str, Vec<(&'static str, String)>)) -> Self {
        Self {
            reason: reason.to_owned(),
            metadata: metadata
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        }
    }
}

impl From<(String, std::collections::BTreeMap<String, String>)> for ErrorInfo {
    fn from((reason, metadata): (String, std::collections::BTreeMap<String, String>)) -> Self {
        Self { reason, metadata }
    }
}

/// The one shape of error → `tonic::Status` in every crate: each crate's
/// error enum implements this in its own `error.rs` (small matches: code,
/// reason, client message); its `From<Error> for Status` calls
/// [`to_status`], and adapters only convert and delegate.
pub trait StatusError: std::fmt::Display {
    /// The gRPC code by meaning.
    fn code(&self) -> Code;

    /// The `ErrorInfo` reason and metadata.
    fn error_info(&self) -> ErrorInfo;

    /// The message a client sees: what to do, without backend internals
    /// (SQL, S3 XML, server paths). By default the error's own text.
    fn client_message(&self) -> String {
        self.to_string()
    }
}

/// The status for `error`: its code, client message and `ErrorInfo`; the
/// full cause (backend text included) goes on the call's span, so the
/// server's one log line for the failed call carries it.
pub fn to_status<E: StatusError + ?Sized>(error: &E) -> tonic::Status {
    record_cause(&error.to_string());
    let info = error.error_info();
    with_recorded_error_info(
        error.code(),
        error.client_message(),
        &info.reason,
        &info.metadata,
    )
}

/// The domain of every `google.rpc.ErrorInfo` Lakehouse sends.
pub const ERROR_DOMAIN: &str = "lakehouse";

/// A status with `google.rpc.ErrorInfo` details: a stable, machine-readable
/// `reason` (UPPER_SNAKE, such as `INDEX_NOT_FOUND`) and the values a client
/// needs to act (such as the current generation), so clients branch on the
/// reason instead of parsing the message.
pub fn with_error_info(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    let metadata: std::collections::HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    tonic::Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// [`with_error_info`] for metadata read back from a journal (owned keys).
pub fn with_recorded_error_info(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: &std::collections::BTreeMap<String, String>,
) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    let metadata: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    tonic::Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// Every `ErrorInfo` metadata entry of a status (empty without one).
pub fn error_info_metadata(status: &tonic::Status) -> std::collections::BTreeMap<String, String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|info| info.metadata.into_iter().collect())
        .unwrap_or_default()
}

/// The `ErrorInfo` reason of a status, if it carries one.
pub fn error_reason(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt as _;
    status.get_details_error_info().map(|info| info.reason)
}

/// The `ErrorInfo` metadata value `key` of a status, if present.
pub fn error_metadata(status: &tonic::Status, key: &str) -> Option<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).cloned())
}

/// The `google.rpc.Status` that ends a long operation's stream: the same
/// code, message and details a failed unary call would carry.
pub fn to_rpc_status(status: &tonic::Status) -> lakehouse_proto::google::rpc::Status {
    use prost::Message as _;
    // A status built with details carries the whole encoded google.rpc.Status.
    if !status.details().is_empty()
        && let Ok(decoded) = lakehouse_proto::google::rpc::Status::decode(status.details())
    {
        return decoded;
    }
    lakehouse_proto::google::rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    }
}

/// The OK status for a terminal message of a successful operation.
pub fn ok_rpc_status() -> lakehouse_proto::google::rpc::Status {
    lakehouse_proto::google::rpc::Status {
        code: Code::Ok as i32,
        message: String::new(),
        details: Vec::new(),
    }
}

/// The tonic status a terminal `google.rpc.Status` stands for, details
/// included (for clients that turn a failed stream back into an error).
pub fn from_rpc_status(status: &lakehouse_proto::google::rpc::Status) -> tonic::Status {
    use prost::Message as _;
    tonic::Status::with_details(
        Code::from_i32(status.code),
        status.message.clone(),
        status.encode_to_vec().into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_info_survives_a_terminal_message() {
        let status = with_error_info(
            Code::Aborted,
            "generation 3 is active, not 2",
            "ACTIVE_GENERATION_MISMATCH",
            [("current", "3".to_owned())],
        );
        assert_eq!(
            error_reason(&status).as_deref(),
            Some("ACTIVE_GENERATION_MISMATCH")
        );
        let terminal = to_rpc_status(&status);
        assert_eq!(terminal.code, Code::Aborted as i32);
        assert_eq!(terminal.details.len(), 1);
        let back = from_rpc_status(&terminal);
        assert_eq!(back.code(), Code::Aborted);
        assert_eq!(error_metadata(&back, "current").as_deref(), Some("3"));
        let plain = to_rpc_status(&tonic::Status::not_found("gone"));
        assert_eq!(
            (plain.code, plain.message.as_str()),
            (Code::NotFound as i32, "gone")
        );
    }
}
