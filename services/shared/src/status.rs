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

/// The status for an RPC that a later milestone implements; it names the
/// feature so the caller knows it is planned, not broken.
pub fn not_yet_implemented(feature: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "{feature} is not implemented yet in this Lakehouse version"
    ))
}
