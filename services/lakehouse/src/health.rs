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
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot connect to {}: {e}; is the server running?",
            args.addr
        )
    })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|status| format!("health check failed: {}", status.message()))?;
    let status = response.into_inner().status();
    let what = if args.service.is_empty() {
        "server"
    } else {
        args.service.as_str()
    };
    println!("{what}: {}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
