//! `lakehouse health`: a probe for scripts and container health checks.

use std::process::ExitCode;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::HealthArgs;

pub async fn run(args: HealthArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let endpoint = lakehouse_client::endpoint(&args.addr)?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| lakehouse_client::Error::Connect {
            address: args.addr.clone(),
            source,
        })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|status| {
            // A connection that broke under the call: as every command
            // reports it (crate::cmd::exit_for), naming the address.
            if std::error::Error::source(&status).is_some()
                && matches!(
                    status.code(),
                    tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::Cancelled
                )
            {
                let _ = crate::cmd::ADDRESS.set(args.addr.clone());
                return status;
            }
            // The message, then the transport's causes (a TLS refusal
            // is only in those); the code stays, for the exit code.
            let cause = std::error::Error::source(&status)
                .map(|e| format!(": {}", lakehouse_client::error_chain(e)))
                .unwrap_or_default();
            tonic::Status::new(
                status.code(),
                format!("health check failed: {}{cause}", status.message()),
            )
        })?;
    let status = response.into_inner().status();
    let what = if args.service.is_empty() {
        "server"
    } else {
        args.service.as_str()
    };
    let value = serde_json::json!({ "service": args.service, "status": status.as_str_name() });
    crate::cmd::print(args.output, &value, || {
        format!("{what}: {}", status.as_str_name())
    });
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
