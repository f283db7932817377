//! The deployment files, checked against the binary without Docker or
//! kubectl: docker-compose.yml and every YAML file of deploy/k8s are parsed,
//! and what they ask of `lakehouse` (subcommands, `LAKEHOUSE_*` variables,
//! ports, health checks, peer addresses) is compared with what the built
//! binary says in its own `--help`. A renamed flag, a moved port or a typo
//! in an environment name fails here instead of in someone's `docker
//! compose up`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The binary the test build made.
const BINARY: &str = env!("CARGO_BIN_EXE_lakehouse");

/// The image tag compose and the Kubernetes base must use: the version of
/// the workspace the image is built from.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The service user of deploy/Dockerfile.
const SERVICE_UID: &str = "10001";

const ROLES: [&str; 4] = ["storage", "catalog", "ingest", "vector"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------- YAML

/// Every document of a YAML file, as JSON values (merge keys applied).
fn load_yaml(path: &Path) -> Vec<Value> {
    let docs = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    docs.iter().map(to_json).filter(|v| !v.is_null()).collect()
}

/// Converts a YAML node; `<<` merge keys (compose's `<<: *lakehouse`) are
/// applied the way compose applies them: keys of the mapping itself win.
fn to_json(node: &Yaml) -> Value {
    match node {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.clone())),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(hash) => {
            let mut own = Map::new();
            let mut merged = Map::new();
            for (key, value) in hash {
                let key = match key {
                    Yaml::String(s) => s.clone(),
                    other => scalar_text(&to_json(other)),
                };
                let value = to_json(value);
                if key == "<<" {
                    let sources = match value {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    for source in sources {
                        if let Value::Object(map) = source {
                            for (k, v) in map {
                                merged.entry(k).or_insert(v);
                            }
                        }
                    }
                } else {
                    own.insert(key, value);
                }
            }
            for (k, v) in merged {
                own.entry(k).or_insert(v);
            }
            Value::Object(own)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// A scalar as the text a container would see.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(scalar_text).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------- the binary

fn run_binary(args: &[String]) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command.args(args).stdin(Stdio::null());
    // The test's own LAKEHOUSE_* environment must not change what the
    // binary accepts or prints.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LAKEHOUSE_") {
            command.env_remove(name);
        }
    }
    command.output().expect("run the lakehouse binary")
}

/// Runs `lakehouse <args> --help` and fails with what to fix unless the
/// binary accepts the arguments.
fn assert_real_command(args: &[String], whence: &str) {
    let mut with_help = args.to_vec();
    with_help.push("--help".to_owned());
    let output = run_binary(&with_help);
    assert!(
        output.status.success(),
        "{whence}: `lakehouse {}` is not a command the binary accepts (`lakehouse {} --help` \
         exited {}): fix the command to match `lakehouse --help`\n{}",
        args.join(" "),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn help_text(args: &[&str]) -> String {
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    args.push("--help".to_owned());
    let output = run_binary(&args);
    assert!(
        output.status.success(),
        "`lakehouse {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every environment variable the binary documents (`[env: NAME=...]` in
/// the help of `serve`, `health` and the top level).
fn binary_env_names() -> &'static BTreeSet<String> {
    static NAMES: OnceLock<BTreeSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = BTreeSet::new();
        let groups: [&[&str]; 3] = [&["serve"], &["health"], &[]];
        for args in groups {
            let text = help_text(args);
            for (at, _) in text.match_indices("[env: ") {
                let name: String = text[at + "[env: ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
        assert!(
            names.contains("LAKEHOUSE_LISTEN"),
            "`lakehouse serve --help` no longer shows [env: LAKEHOUSE_LISTEN=]: update \
             binary_env_names to how it documents environment variables"
        );
        names
    })
}

/// A variable the binary reads: documented in `--help`, or a secret of
/// the env secrets provider (`LAKEHOUSE_SECRET_<NAME>`).
fn assert_env_read(name: &str, whence: &str) {
    let known = binary_env_names();
    assert!(
        known.contains(name) || name.starts_with("LAKEHOUSE_SECRET_"),
        "{whence}: the binary reads no variable {name}: fix the name or remove it (it reads: {})",
        known.iter().cloned().collect::<Vec<_>>().join(", ")
    );
}

/// Each role's default port, as `lakehouse serve --help` states it
/// ("catalog: The catalog service (default port 50052)").
fn default_ports() -> &'static BTreeMap<String, u16> {
    static PORTS: OnceLock<BTreeMap<String, u16>> = OnceLock::new();
    PORTS.get_or_init(|| {
        let text = help_text(&["serve"]);
        let mut ports = BTreeMap::new();
        for role in ROLES {
            let line = text
                .lines()
                .find(|line| line.trim_start().starts_with(&format!("- {role}:")))
                .unwrap_or_else(|| {
                    panic!("`lakehouse serve --help` does not list the role {role}:\n{text}")
                });
            let port = line
                .split("default port ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .and_then(|digits| digits.trim().parse::<u16>().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "`lakehouse serve --help` no longer says the {role} default port: {line}"
                    )
                });
            ports.insert(role.to_owned(), port);
        }
        ports
    })
}

fn default_port(role: &str) -> u16 {
    *default_ports()
        .get(role)
        .unwrap_or_else(|| panic!("no such role {role}"))
}

/// The port of `host:port`, `http://host:port` or `0.0.0.0:port`.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// The host of `http(s)://host:port`.
fn host_of(addr: &str) -> Option<&str> {
    let rest = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    rest.split(':').next()
}

/// The `--addr` of a `lakehouse health` command line.
fn health_addr(args: &[String]) -> Option<&str> {
    let at = args.iter().position(|a| a == "--addr")?;
    args.get(at + 1).map(String::as_str)
}

/// An image reference with a real tag (not `latest`, not missing).
fn assert_pinned(image: &str, whence: &str) {
    let name_part = image.rsplit('/').next().unwrap_or(image);
    let tag = name_part.split_once(':').map(|(_, tag)| tag);
    assert!(
        matches!(tag, Some(t) if !t.is_empty() && t != "latest" && !t.contains("${")),
        "{whence}: image {image:?} floats: pin a released tag (not `latest`, not none)"
    );
}

/// `LAKEHOUSE_*` names in commented-out lines (the TLS examples), which
/// must be real too for whoever uncomments them.
fn commented_env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let comment = comment
            .trim_start()
            .trim_start_matches("- name:")
            .trim_start();
        if let Some(name) = comment.strip_prefix("LAKEHOUSE_") {
            let rest: String = name
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let after = &name[rest.len()..];
            // `NAME: value` (compose) or `- name: NAME` (k8s) only, not prose.
            if after.starts_with(':') || after.trim().is_empty() {
                names.push(format!("LAKEHOUSE_{rest}"));
            }
        }
    }
    names
}

// ---------------------------------------------------------------- compose

struct Compose {
    services: Map<String, Value>,
    volumes: Map<String, Value>,
}

fn compose() -> Compose {
    let path = repo_root().join("docker-compose.yml");
    let mut docs = load_yaml(&path);
    assert_eq!(docs.len(), 1, "docker-compose.yml should be one document");
    let doc = docs.remove(0);
    let services = doc["services"]
        .as_object()
        .cloned()
        .expect("docker-compose.yml has a services mapping");
    let volumes = doc["volumes"].as_object().cloned().unwrap_or_default();
    Compose { services, volumes }
}

/// A service's environment as name -> value (mapping or `NAME=value` list).
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let text = scalar_text(item);
                let (k, v) = text.split_once('=').unwrap_or((text.as_str(), ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn is_lakehouse_image(image: &str) -> bool {
    image == "lakehouse" || image.starts_with("lakehouse:")
}

/// The services that run the lakehouse image, by role (`serve <role>`).
fn compose_roles(compose: &Compose) -> BTreeMap<String, (String, Value)> {
    let mut roles = BTreeMap::new();
    for (name, service) in &compose.services {
        if !is_lakehouse_image(&scalar_text(&service["image"])) {
            continue;
        }
        let command = strings(&service["command"]);
        assert!(
            command.first().map(String::as_str) == Some("serve") && command.len() == 2,
            "compose service {name}: command {command:?} should be [\"serve\", \"<role>\"]"
        );
        let previous = roles.insert(command[1].clone(), (name.clone(), service.clone()));
        assert!(
            previous.is_none(),
            "compose: two services run `serve {}`",
            command[1]
        );
    }
    roles
}

#[test]
fn compose_runs_every_role_with_real_commands_and_env() {
    let compose = compose();
    let roles = compose_roles(&compose);
    assert_eq!(
        roles.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut sorted = ROLES.to_vec();
            sorted.sort_unstable();
            sorted
        },
        "compose should run each of the four roles from the lakehouse image"
    );
    for (name, service) in roles.values() {
        assert_real_command(
            &strings(&service["command"]),
            &format!("compose {name} command"),
        );
        let test = strings(&service["healthcheck"]["test"]);
        assert!(
            test.len() > 2 && test[0] == "CMD" && test[1] == "lakehouse" && test[2] == "health",
            "compose {name}: healthcheck should be [\"CMD\", \"lakehouse\", \"health\", \"--addr\", \
             \"127.0.0.1:<port>\"], is {test:?}"
        );
        assert_real_command(&test[2..], &format!("compose {name} healthcheck"));
        for var in compose_env(service).keys() {
            if var.starts_with("LAKEHOUSE_") {
                assert_env_read(var, &format!("compose {name} environment"));
            }
        }
        assert_eq!(
            scalar_text(&service["user"]),
            format!("{SERVICE_UID}:{SERVICE_UID}"),
            "compose {name}: run as the image's service user ({SERVICE_UID}), which the secrets \
             file is handed to"
        );
    }
    let text = read(&repo_root().join("docker-compose.yml"));
    for var in commented_env_names(&text) {
        assert_env_read(&var, "docker-compose.yml (commented example)");
    }
}

#[test]
fn compose_ports_healthchecks_and_peers_agree() {
    let compose = compose();
    let roles = compose_roles(&compose);
    // role -> (service name, listen port)
    let mut listening: BTreeMap<String, (String, u16)> = BTreeMap::new();
    for (role, (name, service)) in &roles {
        let env = compose_env(service);
        let default = default_port(role);
        let listen = env.get("LAKEHOUSE_LISTEN").unwrap_or_else(|| {
            panic!("compose {name}: set LAKEHOUSE_LISTEN: 0.0.0.0:{default} (the default binds all interfaces only implicitly)")
        });
        let port = port_of(listen)
            .unwrap_or_else(|| panic!("compose {name}: LAKEHOUSE_LISTEN {listen:?} has no port"));
        assert_eq!(
            port, default,
            "compose {name}: listens on {port}, but the binary's default for {role} is {default}; \
             use {default} so compose, Kubernetes and the docs agree"
        );
        let test = strings(&service["healthcheck"]["test"]);
        let addr = health_addr(&test).unwrap_or_else(|| {
            panic!("compose {name}: the healthcheck needs --addr 127.0.0.1:{port}")
        });
        assert_eq!(
            addr,
            format!("127.0.0.1:{port}"),
            "compose {name}: the healthcheck asks {addr} but the service listens on {port}"
        );
        let ports = strings(&service["ports"]);
        assert!(
            ports
                .iter()
                .any(|p| p == &format!("127.0.0.1:{port}:{port}")),
            "compose {name}: publish the gRPC port as \"127.0.0.1:{port}:{port}\", has {ports:?}"
        );
        listening.insert(role.clone(), (name.clone(), port));
    }
    for (name, service) in &compose.services {
        for mapping in strings(&service["ports"]) {
            assert!(
                mapping.starts_with("127.0.0.1:"),
                "compose {name}: port {mapping:?} is published on every host interface: bind it \
                 to 127.0.0.1 (\"127.0.0.1:{mapping}\")"
            );
        }
    }
    for (role, (name, service)) in &roles {
        let env = compose_env(service);
        for (var, target) in [
            ("LAKEHOUSE_STORAGE_ADDR", "storage"),
            ("LAKEHOUSE_CATALOG_ADDR", "catalog"),
        ] {
            let Some(addr) = env.get(var) else {
                assert!(
                    role == "storage",
                    "compose {name}: set {var} (it calls {target})"
                );
                continue;
            };
            let (target_service, target_port) = &listening[target];
            assert_eq!(
                (host_of(addr), port_of(addr)),
                (Some(target_service.as_str()), Some(*target_port)),
                "compose {name}: {var}={addr} should point at the {target} service, \
                 http://{target_service}:{target_port}"
            );
        }
    }
}

#[test]
fn compose_images_are_pinned_and_depends_on_waits() {
    let compose = compose();
    for (name, service) in &compose.services {
        let image = scalar_text(&service["image"]);
        assert!(!image.is_empty(), "compose {name}: name an image");
        assert_pinned(&image, &format!("compose {name}"));
        if is_lakehouse_image(&image) {
            assert_eq!(
                image,
                format!("lakehouse:{VERSION}"),
                "compose {name}: tag the locally built image with the workspace version"
            );
        }
        match &service["depends_on"] {
            Value::Null => {}
            Value::Object(deps) => {
                for (dep, spec) in deps {
                    let target = compose.services.get(dep).unwrap_or_else(|| {
                        panic!("compose {name}: depends_on names no service {dep}")
                    });
                    let condition = scalar_text(&spec["condition"]);
                    let expected = if target["healthcheck"].is_object() {
                        "service_healthy"
                    } else {
                        "service_completed_successfully"
                    };
                    assert_eq!(
                        condition,
                        expected,
                        "compose {name}: depends_on {dep} should wait with condition: \
                         {expected} ({dep} {})",
                        if expected == "service_healthy" {
                            "has a healthcheck"
                        } else {
                            "is a one-shot without one; give long-running services a healthcheck"
                        }
                    );
                    if expected == "service_completed_successfully" {
                        assert_eq!(
                            scalar_text(&target["restart"]),
                            "no",
                            "compose {dep}: a one-shot others wait to complete needs restart: \"no\""
                        );
                    }
                }
            }
            other => panic!(
                "compose {name}: depends_on {other} is a plain list, which waits for nothing: use \
                 a mapping with condition: service_healthy / service_completed_successfully"
            ),
        }
    }
    for infra in ["minio", "postgres"] {
        let service = compose
            .services
            .get(infra)
            .unwrap_or_else(|| panic!("compose: no {infra} service"));
        assert!(
            service["healthcheck"]["test"].is_array(),
            "compose {infra}: add a healthcheck so the services can wait for it"
        );
    }
    let telemetry: Vec<&String> = compose
        .services
        .iter()
        .filter(|(_, s)| strings(&s["profiles"]).iter().any(|p| p == "telemetry"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        !telemetry.is_empty(),
        "compose: offer a trace backend under profiles: [telemetry]"
    );
}

#[test]
fn compose_hands_the_secrets_file_to_the_service_user_as_0600() {
    let compose = compose();
    let roles = compose_roles(&compose);
    for (name, service) in roles.values() {
        let env = compose_env(service);
        let file = env.get("LAKEHOUSE_SECRETS_FILE").unwrap_or_else(|| {
            panic!("compose {name}: set LAKEHOUSE_SECRETS_FILE (tokens are secrets)")
        });
        let (dir, file_name) = file.rsplit_once('/').unwrap_or_else(|| {
            panic!("compose {name}: LAKEHOUSE_SECRETS_FILE {file:?} is not a path")
        });
        let volumes = strings(&service["volumes"]);
        for volume in &volumes {
            assert!(
                !(volume.starts_with('.') || volume.starts_with('/'))
                    || !volume.contains("secrets"),
                "compose {name}: {volume:?} bind-mounts secrets from the host, which keeps the \
                 host's owner and mode (unreadable by uid {SERVICE_UID}, or readable by all): \
                 mount the volume secrets-init fills instead"
            );
        }
        let mount = volumes
            .iter()
            .find_map(|v| {
                let mut parts = v.split(':');
                let source = parts.next()?;
                let target = parts.next()?;
                (target == dir).then(|| source.to_owned())
            })
            .unwrap_or_else(|| {
                panic!("compose {name}: mount the secrets volume at {dir} (the folder of LAKEHOUSE_SECRETS_FILE)")
            });
        assert!(
            compose.volumes.contains_key(&mount),
            "compose {name}: {mount} mounted at {dir} should be a named volume (filled by a one-shot)"
        );
        // The one-shot that fills it: copies, hands to the uid, 0600.
        let (init_name, init) = compose
            .services
            .iter()
            .find(|(other, s)| {
                *other != name
                    && strings(&s["volumes"])
                        .iter()
                        .any(|v| v.split(':').next() == Some(mount.as_str()) && !v.ends_with(":ro"))
            })
            .unwrap_or_else(|| {
                panic!("compose: no one-shot writes the {mount} volume that {name} reads its secrets from")
            });
        let out_dir = strings(&init["volumes"])
            .iter()
            .find_map(|v| {
                let mut parts = v.split(':');
                (parts.next() == Some(mount.as_str()))
                    .then(|| parts.next().map(str::to_owned))
                    .flatten()
            })
            .unwrap_or_default();
        let script = strings(&init["command"]).join(" ");
        let target = format!("{out_dir}/{file_name}");
        for needed in [
            format!("chown {SERVICE_UID}:{SERVICE_UID}"),
            "chmod 0600".to_owned(),
            target.clone(),
        ] {
            assert!(
                script.contains(&needed),
                "compose {init_name}: its command should leave {target} owned by \
                 {SERVICE_UID} with mode 0600 (missing {needed:?}): {script}"
            );
        }
        assert_eq!(
            scalar_text(&init["user"]),
            "0:0",
            "compose {init_name}: chown needs root: user: \"0:0\""
        );
        let depends = &service["depends_on"][init_name.as_str()]["condition"];
        assert_eq!(
            scalar_text(depends),
            "service_completed_successfully",
            "compose {name}: wait for {init_name} (depends_on condition: service_completed_successfully)"
        );
    }
    let dockerfile = read(&repo_root().join("deploy/Dockerfile"));
    assert!(
        dockerfile.contains(&format!("--uid {SERVICE_UID}"))
            && dockerfile.contains(&format!("USER {SERVICE_UID}")),
        "deploy/Dockerfile: the service user must be uid {SERVICE_UID} (useradd --uid, USER), \
         the uid the secrets are handed to"
    );
}

/// `section.key` is in the TOML example (a tiny check: `[section]`, then
/// `key =` before the next section).
fn example_has_secret(example: &str, name: &str) -> bool {
    let Some((section, key)) = name.rsplit_once('.') else {
        return false;
    };
    let mut in_section = false;
    for line in example.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == format!("[{section}]");
        } else if in_section && line.split('=').next().map(str::trim) == Some(key) {
            return true;
        }
    }
    false
}

#[test]
fn compose_catalog_takes_its_password_from_the_secrets_provider() {
    let compose = compose();
    let roles = compose_roles(&compose);
    let (name, catalog) = &roles["catalog"];
    let env = compose_env(catalog);
    let url = env.get("LAKEHOUSE_CATALOG_URL").unwrap_or_else(|| {
        panic!("compose {name}: set LAKEHOUSE_CATALOG_URL to the PostgreSQL catalog")
    });
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .unwrap_or_default();
    assert!(
        !authority.contains(':') && !url.contains("password="),
        "compose {name}: LAKEHOUSE_CATALOG_URL carries a password: drop it and use \
         LAKEHOUSE_CATALOG_PASSWORD_SECRET"
    );
    let secret = env.get("LAKEHOUSE_CATALOG_PASSWORD_SECRET").unwrap_or_else(|| {
        panic!("compose {name}: set LAKEHOUSE_CATALOG_PASSWORD_SECRET (the secret with the password)")
    });
    let example = read(&repo_root().join("deploy/secrets.example.toml"));
    assert!(
        example_has_secret(&example, secret),
        "deploy/secrets.example.toml: add {secret} (the catalog reads its password there)"
    );
    // The seeded source database is mounted and has what a first ingest
    // and index need.
    let postgres = &compose.services["postgres"];
    let init = strings(&postgres["volumes"])
        .into_iter()
        .find(|v| v.contains("/docker-entrypoint-initdb.d"))
        .expect("compose postgres: mount deploy/postgres-init at /docker-entrypoint-initdb.d");
    let folder = init.split(':').next().unwrap_or_default();
    let folder = repo_root().join(folder.trim_start_matches("./"));
    let sql: String = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("read {}: {e}", folder.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "sql"))
        .map(|entry| read(&entry.path()))
        .collect();
    for needed in ["PRIMARY KEY", " text", "float4[]", "INSERT INTO"] {
        assert!(
            sql.contains(needed),
            "{}: the seeded source table needs {needed:?} (an id key, a text and a float4[] \
             embedding column, and rows)",
            folder.display()
        );
    }
}

// ---------------------------------------------------------------- Kubernetes

fn k8s_base() -> PathBuf {
    repo_root().join("deploy/k8s/base")
}

/// Every YAML file under deploy/k8s.
fn k8s_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("deploy/k8s"), &mut files);
    files.sort();
    files
}

/// The base's resources, as listed by its kustomization.
fn k8s_resources() -> Vec<Value> {
    let kustomization = load_yaml(&k8s_base().join("kustomization.yaml"));
    let resources = strings(&kustomization[0]["resources"]);
    resources
        .iter()
        .flat_map(|file| load_yaml(&k8s_base().join(file)))
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn name_of(object: &Value) -> String {
    scalar_text(&object["metadata"]["name"])
}

/// A probe's port: `grpc.port`, or the `--addr` of an exec `lakehouse health`.
fn probe_port(probe: &Value) -> Option<u16> {
    if let Some(port) = probe["grpc"]["port"].as_u64() {
        return u16::try_from(port).ok();
    }
    let command = strings(&probe["exec"]["command"]);
    health_addr(&command).and_then(port_of)
}

#[test]
fn k8s_files_parse_and_kustomization_lists_exactly_the_base() {
    for file in k8s_files() {
        let docs = load_yaml(&file);
        assert!(
            !docs.is_empty(),
            "{} holds no YAML document",
            file.display()
        );
        for doc in &docs {
            let is_kustomization = file.file_name().is_some_and(|n| n == "kustomization.yaml");
            assert!(
                is_kustomization || (doc["apiVersion"].is_string() && doc["kind"].is_string()),
                "{}: every document needs apiVersion and kind",
                file.display()
            );
            if !is_kustomization {
                assert!(
                    doc["metadata"]["name"].is_string(),
                    "{}: a {} without metadata.name",
                    file.display(),
                    doc["kind"]
                );
            }
        }
    }
    let kustomization = load_yaml(&k8s_base().join("kustomization.yaml"));
    let listed: BTreeSet<String> = strings(&kustomization[0]["resources"])
        .into_iter()
        .collect();
    for file in &listed {
        assert!(
            k8s_base().join(file).is_file(),
            "deploy/k8s/base/kustomization.yaml lists {file}, which does not exist: remove it or add the file"
        );
    }
    let present: BTreeSet<String> = std::fs::read_dir(k8s_base())
        .expect("read deploy/k8s/base")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        present, listed,
        "deploy/k8s/base: every manifest should be listed in kustomization.yaml resources (and only those)"
    );
    for image in kustomization[0]["images"].as_array().into_iter().flatten() {
        let tag = scalar_text(&image["newTag"]);
        assert!(
            !tag.is_empty() && tag != "latest",
            "kustomization.yaml images: pin newTag (not latest)"
        );
    }
}

#[test]
fn k8s_deployments_have_real_commands_probes_resources_and_services() {
    let objects = k8s_resources();
    let deployments = of_kind(&objects, "Deployment");
    let services = of_kind(&objects, "Service");
    let config_maps = of_kind(&objects, "ConfigMap");
    let mut roles_seen = BTreeSet::new();
    for deployment in &deployments {
        let name = name_of(deployment);
        let pod = &deployment["spec"]["template"];
        let pod_labels = pod["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let selector = deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(
            !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "Deployment {name}: spec.selector.matchLabels must match the pod template's labels"
        );
        let security = &pod["spec"]["securityContext"];
        assert_eq!(
            scalar_text(&security["runAsUser"]),
            SERVICE_UID,
            "Deployment {name}: securityContext.runAsUser should be the image's user {SERVICE_UID}"
        );
        assert_eq!(
            scalar_text(&security["fsGroup"]),
            SERVICE_UID,
            "Deployment {name}: securityContext.fsGroup {SERVICE_UID}, so Secret volumes are readable by it"
        );
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let cname = scalar_text(&container["name"]);
            let whence = format!("Deployment {name} container {cname}");
            let image = scalar_text(&container["image"]);
            assert_pinned(&image, &whence);
            assert!(
                is_lakehouse_image(&image),
                "{whence}: runs {image}; only lakehouse roles belong in the base"
            );
            assert!(
                container["command"].is_null(),
                "{whence}: leave command unset (the image's entrypoint is lakehouse) and put \
                 `serve <role>` in args"
            );
            let args = strings(&container["args"]);
            assert_real_command(&args, &whence);
            assert!(
                args.len() == 2 && args[0] == "serve",
                "{whence}: args should be [\"serve\", \"<role>\"], are {args:?}"
            );
            let role = args[1].clone();
            let port = default_port(&role);
            roles_seen.insert(role.clone());
            let mut env: BTreeMap<String, String> = BTreeMap::new();
            for var in container["env"].as_array().into_iter().flatten() {
                env.insert(scalar_text(&var["name"]), scalar_text(&var["value"]));
            }
            for source in container["envFrom"].as_array().into_iter().flatten() {
                let map_name = scalar_text(&source["configMapRef"]["name"]);
                let map = config_maps
                    .iter()
                    .find(|m| name_of(m) == map_name)
                    .unwrap_or_else(|| {
                        panic!("{whence}: envFrom names ConfigMap {map_name}, which the base does not define")
                    });
                for (k, v) in map["data"].as_object().into_iter().flatten() {
                    env.entry(k.clone()).or_insert_with(|| scalar_text(v));
                }
            }
            for var in env.keys() {
                if var.starts_with("LAKEHOUSE_") {
                    assert_env_read(var, &whence);
                }
            }
            let listen = env
                .get("LAKEHOUSE_LISTEN")
                .map(String::as_str)
                .unwrap_or_default();
            assert_eq!(
                port_of(listen),
                Some(port),
                "{whence}: LAKEHOUSE_LISTEN should be 0.0.0.0:{port}, the {role} default"
            );
            let container_port = container["ports"]
                .as_array()
                .and_then(|ports| ports.first())
                .cloned()
                .unwrap_or(Value::Null);
            assert_eq!(
                container_port["containerPort"].as_u64(),
                Some(u64::from(port)),
                "{whence}: containerPort should be {port}"
            );
            for probe in ["readinessProbe", "livenessProbe"] {
                assert_eq!(
                    probe_port(&container[probe]),
                    Some(port),
                    "{whence}: {probe} should be `grpc: {{port: {port}}}` (the port it listens on)"
                );
            }
            if !container["startupProbe"].is_null() {
                assert_eq!(
                    probe_port(&container["startupProbe"]),
                    Some(port),
                    "{whence}: startupProbe should ask port {port}"
                );
            }
            for (kind, what) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ] {
                assert!(
                    !container["resources"][kind][what].is_null(),
                    "{whence}: set resources.{kind}.{what}"
                );
            }
            // Peers point at the right Service's port.
            for (var, target) in [
                ("LAKEHOUSE_STORAGE_ADDR", "storage"),
                ("LAKEHOUSE_CATALOG_ADDR", "catalog"),
            ] {
                let Some(addr) = env.get(var) else { continue };
                let host = host_of(addr).unwrap_or_default();
                let service = services
                    .iter()
                    .find(|s| name_of(s) == host)
                    .unwrap_or_else(|| panic!("{whence}: {var}={addr} names no Service {host}"));
                let target_port = default_port(target);
                assert_eq!(
                    port_of(addr),
                    Some(target_port),
                    "{whence}: {var}={addr} should use port {target_port}"
                );
                assert_eq!(
                    scalar_text(&service["spec"]["selector"]["app.kubernetes.io/component"]),
                    target,
                    "{whence}: {var} points at Service {host}, which does not select the {target} pods"
                );
            }
            // A Service that selects these pods on this port.
            let service = services
                .iter()
                .find(|s| {
                    s["spec"]["selector"].as_object().is_some_and(|sel| {
                        !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
                    })
                })
                .unwrap_or_else(|| {
                    panic!("Deployment {name}: add a Service that selects its pods")
                });
            let service_port = service["spec"]["ports"]
                .as_array()
                .and_then(|ports| ports.first())
                .cloned()
                .unwrap_or(Value::Null);
            assert_eq!(
                service_port["port"].as_u64(),
                Some(u64::from(port)),
                "Service {}: port should be {port} (the {role} default, which peers use)",
                name_of(service)
            );
            let target = &service_port["targetPort"];
            assert!(
                target.as_u64() == Some(u64::from(port))
                    || (target.is_string() && *target == container_port["name"]),
                "Service {}: targetPort {target} should be {port} or the container port's name",
                name_of(service)
            );
            assert_k8s_secrets(deployment, container, &env, &whence);
        }
    }
    assert_eq!(
        roles_seen,
        ROLES
            .iter()
            .map(|r| (*r).to_owned())
            .collect::<BTreeSet<String>>(),
        "deploy/k8s/base should run one Deployment per role"
    );
    for file in k8s_files() {
        for var in commented_env_names(&read(&file)) {
            assert_env_read(&var, &format!("{} (commented example)", file.display()));
        }
    }
}

/// The secrets file reaches the container as a 0600 file of uid 10001:
/// a Secret volume (0400/0440) copied by an init container into an
/// emptyDir mounted where LAKEHOUSE_SECRETS_FILE points.
fn assert_k8s_secrets(
    deployment: &Value,
    container: &Value,
    env: &BTreeMap<String, String>,
    whence: &str,
) {
    let spec = &deployment["spec"]["template"]["spec"];
    let file = env
        .get("LAKEHOUSE_SECRETS_FILE")
        .unwrap_or_else(|| panic!("{whence}: set LAKEHOUSE_SECRETS_FILE"));
    let (dir, _) = file
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{whence}: LAKEHOUSE_SECRETS_FILE {file:?} is not a path"));
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| scalar_text(&m["mountPath"]) == dir)
        .unwrap_or_else(|| panic!("{whence}: mount the secrets at {dir}"));
    let volume_name = scalar_text(&mount["name"]);
    let volume = volumes
        .iter()
        .find(|v| scalar_text(&v["name"]) == volume_name)
        .unwrap_or_else(|| panic!("{whence}: no volume {volume_name}"));
    assert!(
        volume["emptyDir"].is_object(),
        "{whence}: the secrets folder {dir} should be an emptyDir filled by the init container \
         (a Secret volume with fsGroup is group-readable, which the secrets provider refuses)"
    );
    let init = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| scalar_text(&m["name"]) == volume_name && m["readOnly"] != true)
        })
        .unwrap_or_else(|| panic!("{whence}: no init container writes the {volume_name} volume"));
    let script = strings(&init["command"]).join(" ");
    for needed in ["umask 077", "chmod 0600", file.as_str()] {
        assert!(
            script.contains(needed),
            "{whence}: the init container should write {file} as a 0600 file (missing {needed:?}): {script}"
        );
    }
    let run_as = &init["securityContext"]["runAsUser"];
    assert!(
        run_as.is_null() || scalar_text(run_as) == SERVICE_UID,
        "{whence}: the init container must run as {SERVICE_UID}, so the copy is that user's own"
    );
    let secret_volumes: Vec<&Value> = volumes.iter().filter(|v| v["secret"].is_object()).collect();
    assert!(
        !secret_volumes.is_empty(),
        "{whence}: mount the lakehouse-secrets Secret for the init container"
    );
    for volume in secret_volumes {
        let mode = volume["secret"]["defaultMode"].as_u64();
        assert!(
            matches!(mode, Some(0o400) | Some(0o440)),
            "{whence}: Secret volume {} needs defaultMode 256 (0400) or 288 (0440), has {mode:?}; \
             write it in decimal, YAML 1.1 and 1.2 read 0440 differently",
            scalar_text(&volume["name"])
        );
    }
}
