//! The vector verbs of the CLI as a new user meets them (issue 27), through
//! the real binary against `lakehouse serve all`: Ctrl-C on long work (a
//! real SIGINT to the CLI process, the server's state checked after), the
//! cancel verbs, applying tuned settings, the tune's overall progress, and
//! every verb answering a table for people and one JSON line for agents.

use crate::e2e_cli_errors::{Run, cli, path_str, server_with_docs};
use crate::support::{self, ServerProcess};

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A CLI process still running, its stderr read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: String,
}

impl Running {
    fn start(server: &ServerProcess, args: &[&str]) -> Self {
        let mut child = Command::new(support::BINARY)
            .args(args)
            .args(["--addr", &server.addr])
            .env_remove("LAKEHOUSE_VECTOR_ADDR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the CLI");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stderr: String::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push_str(&line);
                    self.stderr.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {needle:?} on stderr: {}", self.stderr);
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the exit.
    fn interrupt(mut self) -> Run {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let output = self.child.wait_with_output().expect("wait for the CLI");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push_str(&line);
                    self.stderr.push('\n');
                }
                Err(_) => break,
            }
        }
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: self.stderr,
        }
    }
}

/// Writes `n` random `dim`-dimensional vectors as NDJSON (id, embedding)
/// and ingests them as dataset `name`.
fn ingest_vectors(server: &ServerProcess, dir: &Path, name: &str, n: usize, dim: usize) {
    let path = dir.join(format!("{name}.ndjson"));
    let mut text = String::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for id in 0..n {
        let vector: Vec<String> = (0..dim)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{:.4}", (state % 20_000) as f64 / 10_000.0 - 1.0)
            })
            .collect();
        text.push_str(&format!(
            "{{\"id\":{id},\"embedding\":[{}]}}\n",
            vector.join(",")
        ));
    }
    std::fs::write(&path, text).expect("write vectors");
    cli(
        server,
        &["ingest", "file", path_str(&path), "--dataset", name],
    )
    .ok("ingest vectors");
}

/// Each generation of `index` as (number, state name).
fn generations(server: &ServerProcess, index: &str) -> Vec<(u64, String)> {
    cli(server, &["index", "generations", index, "--output", "json"])
        .ok("index generations")
        .lines()
        .map(|l| {
            let g: Value = serde_json::from_str(l).expect("one JSON generation a line");
            (
                g["generation"].as_u64().expect("generation"),
                g["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: not one JSON line: {line}"))
}

/// Build settings slow enough (seconds even in release) that the build is
/// still running when the SIGINT comes.
const SLOW: &[&str] = &["--m", "64", "--ef-construction", "2000"];

/// Ctrl-C used to exit 130 without a word while the work went on. Now:
/// without --cancel-on-interrupt the CLI says what goes on and how to stop
/// it (and the verbs it names do); with it, the work is cancelled on the
/// server. For index create, index rebuild, trial run and tune.
#[test]
fn ctrl_c_says_what_goes_on_or_cancels_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_docs(dir.path());
    ingest_vectors(&server, dir.path(), "big", 20_000, 32);

    // index create, default: the build goes on, `index cancel` stops it.
    let mut create = Running::start(
        &server,
        &[&["index", "create", "big-idx", "--dataset", "big"], SLOW].concat(),
    );
    create.wait_for("building big-idx generation 1");
    create.wait_for("INSERTING");
    let run = create.interrupt();
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "the build of index big-idx generation 1 goes on on the server; watch it with \
             `lakehouse index generations big-idx`, stop it with \
             `lakehouse index cancel big-idx --generation 1`"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        generations(&server, "big-idx"),
        [(1, "GENERATION_STATE_BUILDING".to_owned())],
        "the build goes on after Ctrl-C"
    );
    let cancelled = cli(&server, &["index", "cancel", "big-idx", "--output", "json"]).ok("cancel");
    let cancelled = json(&cancelled);
    assert_eq!(cancelled["generation"], 1);
    assert_eq!(cancelled["state"], "GENERATION_STATE_CANCELLED");
    assert_eq!(
        generations(&server, "big-idx"),
        [(1, "GENERATION_STATE_CANCELLED".to_owned())]
    );
    // Nothing left to cancel: a wrong-state refusal.
    let error = cli(&server, &["index", "cancel", "big-idx"]).fails(4, "error: no build");
    assert!(error.contains("big-idx"), "{error}");

    // index rebuild --cancel-on-interrupt: cancelled on the server.
    cli(&server, &["index", "create", "big-idx", "--dataset", "big"]).ok("the quick create");
    let mut rebuild = Running::start(
        &server,
        &[
            &["index", "rebuild", "big-idx", "--cancel-on-interrupt"],
            SLOW,
        ]
        .concat(),
    );
    let started = rebuild.wait_for("rebuilding big-idx as generation ");
    let generation: u64 = started
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a generation number");
    rebuild.wait_for("INSERTING");
    let run = rebuild.interrupt();
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "cancelled the build of index big-idx generation {generation} on the server (CANCELLED)"
        )),
        "{}",
        run.stderr
    );
    let states = generations(&server, "big-idx");
    assert!(
        states.contains(&(generation, "GENERATION_STATE_CANCELLED".to_owned())),
        "{states:?}"
    );

    // trial run --cancel-on-interrupt: the run is cancelled; a second
    // cancel finds it ended.
    cli(
        &server,
        &[
            "eval",
            "create",
            "big-eval",
            "--index",
            "big-idx",
            "--queries",
            "20",
        ],
    )
    .ok("eval create");
    let mut trial = Running::start(
        &server,
        &[
            &[
                "trial",
                "run",
                "--index",
                "big-idx",
                "--eval-set",
                "big-eval",
                "--cancel-on-interrupt",
            ],
            SLOW,
        ]
        .concat(),
    );
    let started = trial.wait_for("trial run ");
    let run_id = started.trim_start_matches("trial run ").trim().to_owned();
    trial.wait_for("INSERTING");
    let run = trial.interrupt();
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cancelled trial run {run_id} on the server")),
        "{}",
        run.stderr
    );
    // The run stops: a cancel soon finds it ended (idempotent, false then).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let again = cli(&server, &["trial", "cancel", &run_id, "--output", "json"]).ok("cancel");
        if json(&again)["cancelled"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "the run never ended: {again}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // tune, default: it goes on; `trial cancel` (named) stops it.
    let mut tune = Running::start(
        &server,
        &["tune", "--index", "big-idx", "--eval-set", "big-eval"],
    );
    let started = tune.wait_for("tune run ");
    let run_id = started.trim_start_matches("tune run ").trim().to_owned();
    let run = tune.interrupt();
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "tune {run_id} goes on on the server, journaling its trials; stop it with \
             `lakehouse trial cancel {run_id}`"
        )),
        "{}",
        run.stderr
    );
    let stopped = cli(&server, &["trial", "cancel", &run_id, "--output", "json"]).ok("cancel");
    assert_eq!(json(&stopped)["cancelled"], true, "{stopped}");
    cli(&server, &["trial", "cancel", "no-such-run"]).fails(3, "error: NotFound");
}

/// Applying tuned settings without grpcurl: `index update --ef-search`,
/// `tune --promote` setting the winner's ef_search (the server's promote
/// keeps the old one), `trial best --eval-set --objective`; and the tune's
/// progress in a pipe: one line per event, each with the whole run's count.
#[test]
fn tuned_settings_apply_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_docs(dir.path());
    ingest_vectors(&server, dir.path(), "vecs", 600, 16);
    cli(
        &server,
        &["index", "create", "vecs-idx", "--dataset", "vecs"],
    )
    .ok("index create");
    let updated = cli(
        &server,
        &[
            "index",
            "update",
            "vecs-idx",
            "--ef-search",
            "77",
            "--output",
            "json",
        ],
    )
    .ok("index update");
    assert_eq!(json(&updated)["ef_search"], 77);
    let line = cli(
        &server,
        &["index", "update", "vecs-idx", "--ef-search", "78"],
    )
    .ok("update");
    assert!(line.starts_with("vecs-idx\tef_search 78"), "{line}");
    cli(&server, &["index", "update", "vecs-idx"]).fails(2, "error: nothing to change");
    cli(
        &server,
        &[
            "eval",
            "create",
            "vecs-eval",
            "--index",
            "vecs-idx",
            "--queries",
            "20",
        ],
    )
    .ok("eval create");

    let run = cli(
        &server,
        &[
            "tune",
            "--index",
            "vecs-idx",
            "--eval-set",
            "vecs-eval",
            "--min-recall",
            "0.8",
            "--objective",
            "recall",
            "--time-budget",
            "10m",
            "--promote",
            "--output",
            "json",
        ],
    );
    let stderr = run.stderr.clone();
    let result = json(&run.ok("tune"));
    let best_ef = result["best"]["ef_search"].as_u64().expect("ef_search");
    assert!(result["promoted_generation"].as_u64() > Some(1), "{result}");
    assert_eq!(result["ef_search_applied"], best_ef, "{result}");
    let shown = json(&cli(&server, &["index", "show", "vecs-idx", "--output", "json"]).ok("show"));
    assert_eq!(
        shown["ef_search"], best_ef,
        "the winner's ef_search: {shown}"
    );
    assert_eq!(shown["active_generation"], result["promoted_generation"]);

    // Progress in a pipe: after the run id, every line carries the whole
    // run's count, and the last reaches the plan (600 vectors: one round
    // of the 15-candidate grid).
    let mut lines = stderr.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("tune run ")),
        "{stderr}"
    );
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest.iter().all(|l| l.starts_with("round 1/1, builds ")),
        "{stderr}"
    );
    assert!(
        rest.last()
            .is_some_and(|l| l.contains("builds 15/15 planned")),
        "{stderr}"
    );
    let trials = result["trial_count"].as_u64().expect("trial_count") as usize;
    assert!(
        rest.len() <= trials + 15 * 4,
        "a line per trial and per phase change, not per step: {} lines for {trials} trials",
        rest.len()
    );

    // trial best on one eval set, by an objective.
    let best = json(
        &cli(
            &server,
            &[
                "trial",
                "best",
                "--index",
                "vecs-idx",
                "--eval-set",
                "vecs-eval",
                "--objective",
                "recall",
                "--min-recall",
                "0.5",
                "--output",
                "json",
            ],
        )
        .ok("trial best"),
    );
    let top = cli(
        &server,
        &["trial", "ls", "--index", "vecs-idx", "--output", "json"],
    )
    .ok("trial ls");
    let top = json(top.lines().next().expect("a trial"));
    assert_eq!(
        best["recall"], top["recall"],
        "highest recall: {best} {top}"
    );
    cli(
        &server,
        &[
            "trial",
            "best",
            "--index",
            "vecs-idx",
            "--eval-set",
            "other-eval",
            "--min-recall",
            "0.5",
        ],
    )
    .fails(3, "error: NotFound [NO_TRIAL_MEETS_RECALL]: ");
}

/// `index show` is one JSON line for agents and a field-per-line table for
/// people, with the metric and columns; `index rm` answers on stdout;
/// and `eval create` says when it made fewer queries than asked.
#[test]
fn index_verbs_answer_people_and_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_docs(dir.path());
    cli(
        &server,
        &[
            "index",
            "create",
            "docs-idx",
            "--dataset",
            "docs",
            "--text-column",
            "text",
            "--metric",
            "l2",
        ],
    )
    .ok("index create");

    let shown = cli(&server, &["index", "show", "docs-idx", "--output", "json"]).ok("show");
    assert_eq!(
        shown.lines().count(),
        1,
        "one JSON document a line: {shown}"
    );
    let shown = json(&shown);
    assert_eq!(shown["metric"], "METRIC_L2");
    assert_eq!(
        (
            &shown["id_column"],
            &shown["text_column"],
            &shown["vector_column"]
        ),
        (&"id".into(), &"text".into(), &"embedding".into())
    );
    let table = cli(&server, &["index", "show", "docs-idx"]).ok("show");
    assert!(!table.contains('{'), "no JSON in table mode: {table}");
    for (field, value) in [
        ("metric", "METRIC_L2"),
        ("vector_column", "embedding"),
        ("text_column", "text"),
        ("name", "docs-idx"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(field) && l.trim_end().ends_with(value)),
            "{field} {value}: {table}"
        );
    }

    // 4 vectors: 4 queries, and a note saying so.
    let made = cli(
        &server,
        &[
            "eval",
            "create",
            "docs-eval",
            "--index",
            "docs-idx",
            "--queries",
            "200",
        ],
    );
    assert!(
        made.stderr
            .contains("made 4 queries, not 200: index docs-idx has only 4 vectors"),
        "{}",
        made.stderr
    );
    assert!(made.ok("eval create").contains("4 queries"));

    let removed = cli(&server, &["index", "rm", "docs-idx", "--output", "json"]).ok("rm");
    let removed = json(&removed);
    assert_eq!(
        (&removed["name"], &removed["removed"]),
        (&"docs-idx".into(), &true.into())
    );
    cli(&server, &["index", "create", "x-idx", "--dataset", "docs"]).ok("create");
    let removed = cli(&server, &["index", "rm", "x-idx"]).ok("rm");
    assert_eq!(removed.trim(), "removed index x-idx");
}
