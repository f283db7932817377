//! TLS through real processes (ADR 0011), with a CA, a server certificate
//! (SAN 127.0.0.1 and localhost) and a client certificate this test makes:
//! `serve all` over TLS (its services calling each other over TLS too), a
//! client with the CA gets in and a plaintext one does not; with mutual TLS
//! a client without a certificate is refused and one with a certificate
//! gets in; a split deployment (vector calling storage) over mutual TLS;
//! and no private key in any server's output.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use support::ServerProcess;

/// PEM files of one test PKI.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// The keys' PEM text, to check that no log holds them.
    keys: Vec<String>,
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write PEM");
    path.to_owned()
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, all signed by the CA, written under `dir`.
fn make_pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("create pki dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "lakehouse test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "lakehouse server");
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "lakehouse client");
    let client_cert = client_params
        .signed_by(&client_key, &ca)
        .expect("client cert");

    Pki {
        ca: write(&dir.join("ca.pem"), &ca.pem()),
        server_cert: write(&dir.join("server.pem"), &server_cert.pem()),
        server_key: write(&dir.join("server-key.pem"), &server_key.serialize_pem()),
        client_cert: write(&dir.join("client.pem"), &client_cert.pem()),
        client_key: write(&dir.join("client-key.pem"), &client_key.serialize_pem()),
        keys: vec![server_key.serialize_pem(), client_key.serialize_pem()],
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// Environment of a server serving TLS with the test's server certificate,
/// trusting the test CA for its own peer calls.
fn tls_env(pki: &Pki) -> Vec<(&'static str, String)> {
    vec![
        ("LAKEHOUSE_TLS_CERT", path(&pki.server_cert)),
        ("LAKEHOUSE_TLS_KEY", path(&pki.server_key)),
        ("LAKEHOUSE_TLS_CA", path(&pki.ca)),
    ]
}

/// Adds mutual TLS: clients need a certificate from the test CA, and the
/// process presents the client certificate to its peers (itself in `all`).
fn mtls_env(pki: &Pki) -> Vec<(&'static str, String)> {
    let mut env = tls_env(pki);
    env.push(("LAKEHOUSE_TLS_CLIENT_CA", path(&pki.ca)));
    env.push(("LAKEHOUSE_TLS_CLIENT_CERT", path(&pki.client_cert)));
    env.push(("LAKEHOUSE_TLS_CLIENT_KEY", path(&pki.client_key)));
    env
}

/// Runs `lakehouse <args>` with no TLS environment inherited.
fn lakehouse(args: &[&str]) -> Output {
    Command::new(support::BINARY)
        .args(args)
        .env_remove("LAKEHOUSE_TLS_CA")
        .env_remove("LAKEHOUSE_TLS_CLIENT_CERT")
        .env_remove("LAKEHOUSE_TLS_CLIENT_KEY")
        .output()
        .expect("run lakehouse")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `lakehouse health` with `tls_args` until SERVING (the vector
/// service turns SERVING only after listing its indexes through storage,
/// so this also proves the peer calls work), or panics with the log.
fn wait_healthy_tls(server: &ServerProcess, tls_args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut args = vec!["health", "--addr", &server.addr, "--timeout", "1s"];
        args.extend_from_slice(tls_args);
        let output = lakehouse(&args);
        if output.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not healthy over TLS within 60 s: {}\n---- log ----\n{}",
            text(&output),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_no_keys(pki: &Pki, what: &str, log: &str) {
    for key in &pki.keys {
        let body = key.lines().nth(1).expect("a PEM body line");
        assert!(!log.contains(body), "a private key appears in {what}");
    }
}

#[test]
fn serve_all_over_tls_admits_clients_trusting_the_ca_and_refuses_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(&dir.path().join("pki"));
    let mut server = ServerProcess::start("all", &dir.path().join("all"), &tls_env(&pki));
    let ca = path(&pki.ca);
    wait_healthy_tls(&server, &["--tls-ca", &ca]);

    // An explicit https:// address works the same as a bare one.
    let https = format!("https://{}", server.addr);
    let output = lakehouse(&["health", "--addr", &https, "--tls-ca", &ca]);
    assert!(output.status.success(), "{}", text(&output));

    // Storage through the CLI: put, then list.
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, "hello over TLS").expect("write file");
    let file = path(&file);
    let output = lakehouse(&[
        "storage",
        "--addr",
        &server.addr,
        "--tls-ca",
        &ca,
        "put",
        &file,
        "tls/hello.txt",
    ]);
    assert!(output.status.success(), "put: {}", text(&output));
    let output = lakehouse(&[
        "storage",
        "--addr",
        &server.addr,
        "--tls-ca",
        &ca,
        "ls",
        "tls/",
    ]);
    assert!(output.status.success(), "ls: {}", text(&output));
    assert!(text(&output).contains("tls/hello.txt"), "{}", text(&output));

    // Plaintext against a TLS port: refused.
    let output = lakehouse(&["health", "--addr", &server.uri(), "--timeout", "2s"]);
    assert!(
        !output.status.success(),
        "plaintext got in: {}",
        text(&output)
    );
    let output = lakehouse(&["storage", "--addr", &server.uri(), "ls", "tls/"]);
    assert!(
        !output.status.success(),
        "plaintext got in: {}",
        text(&output)
    );

    // TLS without the test CA (the system's roots do not know it): refused.
    let output = lakehouse(&["health", "--addr", &https, "--timeout", "2s"]);
    assert!(
        !output.status.success(),
        "untrusted CA accepted: {}",
        text(&output)
    );

    server.stop();
    let log = server.log_text();
    assert!(
        log.contains("tls=true"),
        "the log should say TLS is on:\n{log}"
    );
    assert_no_keys(&pki, "the server log", &log);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(&dir.path().join("pki"));
    let mut server = ServerProcess::start("all", &dir.path().join("all"), &mtls_env(&pki));
    let ca = path(&pki.ca);
    let cert = path(&pki.client_cert);
    let key = path(&pki.client_key);
    let with_cert = [
        "--tls-ca",
        ca.as_str(),
        "--tls-client-cert",
        &cert,
        "--tls-client-key",
        &key,
    ];
    wait_healthy_tls(&server, &with_cert);

    // The CA alone is not enough: no client certificate, no connection.
    let output = lakehouse(&[
        "health",
        "--addr",
        &server.addr,
        "--timeout",
        "2s",
        "--tls-ca",
        &ca,
    ]);
    assert!(
        !output.status.success(),
        "a client without a certificate got in: {}",
        text(&output)
    );
    let output = lakehouse(&[
        "storage",
        "--addr",
        &server.addr,
        "--tls-ca",
        &ca,
        "buckets",
    ]);
    assert!(
        !output.status.success(),
        "a client without a certificate got in: {}",
        text(&output)
    );

    // With the certificate: in.
    let mut args = vec!["storage", "--addr", server.addr.as_str()];
    args.extend_from_slice(&with_cert);
    args.push("buckets");
    let output = lakehouse(&args);
    assert!(output.status.success(), "buckets: {}", text(&output));

    // A key given without its certificate is a usage error, not a silent
    // plaintext or anonymous call.
    let output = lakehouse(&[
        "health",
        "--addr",
        &server.addr,
        "--tls-ca",
        &ca,
        "--tls-client-key",
        &key,
    ]);
    assert!(!output.status.success(), "{}", text(&output));

    server.stop();
    assert_no_keys(&pki, "the server log", &server.log_text());
}

#[test]
fn split_deployment_calls_its_peers_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(&dir.path().join("pki"));
    let env = mtls_env(&pki);
    let ca = path(&pki.ca);
    let cert = path(&pki.client_cert);
    let key = path(&pki.client_key);
    let with_cert = [
        "--tls-ca",
        ca.as_str(),
        "--tls-client-cert",
        &cert,
        "--tls-client-key",
        &key,
    ];

    let mut storage = ServerProcess::start("storage", &dir.path().join("storage"), &env);
    wait_healthy_tls(&storage, &with_cert);

    // The vector service lists its persisted indexes through storage before
    // it reports SERVING: healthy means it called storage over mutual TLS.
    let mut vector_env = env.clone();
    vector_env.push((
        "LAKEHOUSE_STORAGE_ADDR",
        format!("https://{}", storage.addr),
    ));
    let mut vector = ServerProcess::start("vector", &dir.path().join("vector"), &vector_env);
    wait_healthy_tls(&vector, &with_cert);

    let mut args = vec!["index", "--addr", vector.addr.as_str()];
    args.extend_from_slice(&with_cert);
    args.push("ls");
    let output = lakehouse(&args);
    assert!(output.status.success(), "index ls: {}", text(&output));

    vector.stop();
    storage.stop();
    assert_no_keys(&pki, "the vector log", &vector.log_text());
    assert_no_keys(&pki, "the storage log", &storage.log_text());
}
