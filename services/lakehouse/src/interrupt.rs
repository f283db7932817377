//! Ctrl-C during long vector work (`index create|rebuild`, `trial run`,
//! `tune`). The server's contract is that a build or run whose client goes
//! away keeps running (a dropped laptop connection must not throw away an
//! hour of building), so exiting on SIGINT alone would leave work going on
//! that the user believes stopped. On SIGINT the command therefore says
//! on stderr what goes on on the server and the command that stops it,
//! or, with `--cancel-on-interrupt` (for scripts whose Ctrl-C or `kill
//! -INT` means "stop everything"), cancels it itself. Either way it exits
//! 130, the shell's code for "ended by SIGINT".

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;

use crate::cmd::{Result, VectorTarget};

/// Exit code of a command ended by Ctrl-C (128 + SIGINT), as shells report.
pub const INTERRUPTED: u8 = 130;

/// How long a cancel waits for a build to stop before saying it was asked.
const CANCEL_WAIT: Duration = Duration::from_secs(15);

/// The `--cancel-on-interrupt` switch of the long commands.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct InterruptArgs {
    /// On Ctrl-C (SIGINT), cancel the work on the server too. Without it
    /// the work goes on on the server, and the command says how to stop it.
    #[arg(long)]
    pub cancel_on_interrupt: bool,
}

/// Server-side work a long command started; its id is filled in when the
/// stream's first message names it.
#[derive(Debug, Clone)]
pub enum Work {
    /// A build of `index`.
    Build {
        index: String,
        generation: Option<u64>,
    },
    /// A RunTrial (`verb` "trial run") or TuneIndex ("tune") run.
    Run {
        verb: &'static str,
        index: String,
        run_id: Option<String>,
    },
}

/// Where a command notes what it started, read when Ctrl-C comes.
#[derive(Debug, Clone)]
pub struct Started(Arc<Mutex<Work>>);

impl Started {
    /// The build's generation, from its `started` message.
    pub fn build(&self, number: u64) {
        let mut work = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Work::Build { generation, .. } = &mut *work {
            *generation = Some(number);
        }
    }

    /// The run's id, from its `started` message.
    pub fn run(&self, id: &str) {
        let mut work = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Work::Run { run_id, .. } = &mut *work {
            *run_id = Some(id.to_owned());
        }
    }

    fn work(&self) -> Work {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs `body` (which notes what it started in the [`Started`] it is
/// given) until it ends or SIGINT comes; then says what goes on, or
/// cancels it when `cancel`.
pub async fn interruptible<F>(
    target: &VectorTarget,
    work: Work,
    cancel: bool,
    body: impl FnOnce(Started) -> F,
) -> Result<ExitCode>
where
    F: Future<Output = Result<ExitCode>>,
{
    // Listening before the first call, so a Ctrl-C while connecting is
    // ours too (the default would end the process without a word).
    let mut sigint = Sigint::listen()?;
    let started = Started(Arc::new(Mutex::new(work)));
    tokio::select! {
        result = body(started.clone()) => result,
        () = sigint.recv() => {
            // `body` is dropped by now: its progress bar is cleared.
            let work = started.work();
            if cancel {
                // A second Ctrl-C means "now": stop waiting for the cancel.
                tokio::select! {
                    cancelled = cancel_work(target, &work) => cancelled?,
                    () = sigint.recv() => eprintln!(
                        "second Ctrl-C, not waiting for the cancel (it may not have reached the server): {}",
                        goes_on(&work)
                    ),
                }
            } else {
                eprintln!("{}", goes_on(&work));
            }
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}

/// SIGINT, listened for from [`Sigint::listen`] on.
struct Sigint {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Sigint {
    /// Installs the handler now, not at the first poll.
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    /// The next SIGINT.
    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What goes on on the server after Ctrl-C, and how to stop it.
fn goes_on(work: &Work) -> String {
    match work {
        Work::Build {
            index,
            generation: Some(generation),
        } => format!(
            "interrupted: the build of index {index} generation {generation} goes on on the server; \
             watch it with `lakehouse index generations {index}`, stop it with \
             `lakehouse index cancel {index} --generation {generation}` \
             (--cancel-on-interrupt stops it on Ctrl-C)"
        ),
        Work::Build {
            index,
            generation: None,
        } => format!(
            "interrupted before the server named the build: if it started, it goes on; \
             `lakehouse index generations {index}` shows it, `lakehouse index cancel {index}` stops it"
        ),
        Work::Run {
            verb,
            index: _,
            run_id: Some(run_id),
        } => format!(
            "interrupted: {verb} {run_id} goes on on the server, journaling its trials; \
             stop it with `lakehouse trial cancel {run_id}` (--cancel-on-interrupt stops it on Ctrl-C)"
        ),
        Work::Run {
            verb,
            index,
            run_id: None,
        } => format!(
            "interrupted before the server named the {verb}: if it started, it goes on; \
             `lakehouse trial ls --index {index}` shows its trials as they are journaled"
        ),
    }
}

/// `--cancel-on-interrupt`: stops the work on the server and says so.
async fn cancel_work(target: &VectorTarget, work: &Work) -> Result<()> {
    let mut client = crate::vector_cmd::client(target).await?;
    match work {
        Work::Build { index, generation } => {
            let generation = match generation {
                Some(generation) => *generation,
                // Interrupted before the first message: the running build,
                // if the server got as far as starting one.
                None => match building_generation(&mut client, index).await? {
                    Some(generation) => generation,
                    None => {
                        eprintln!("interrupted: no build of index {index} was running");
                        return Ok(());
                    }
                },
            };
            let state = cancel_build(&mut client, index, generation).await?;
            eprintln!(
                "interrupted: cancelled the build of index {index} generation {generation} on the server ({})",
                state_name(state)
            );
        }
        Work::Run {
            verb,
            index,
            run_id: None,
        } => eprintln!(
            "interrupted before the server named the {verb}, so it could not be cancelled; \
             `lakehouse trial ls --index {index}` shows whether it journals trials"
        ),
        Work::Run {
            verb,
            run_id: Some(run_id),
            ..
        } => {
            let cancelled = cancel_run(&mut client, run_id).await?;
            if cancelled {
                eprintln!(
                    "interrupted: cancelled {verb} {run_id} on the server; the trials it measured stay journaled"
                );
            } else {
                eprintln!("interrupted: {verb} {run_id} had already ended on the server");
            }
        }
    }
    Ok(())
}

/// The generation of `index` being built now, if one is (newest first).
pub async fn building_generation(client: &mut VectorClient, index: &str) -> Result<Option<u64>> {
    let mut page_token = String::new();
    loop {
        let page = client
            .list_generations(pb::ListGenerationsRequest {
                index: index.to_owned(),
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        if let Some(g) = page
            .generations
            .iter()
            .find(|g| g.state() == pb::GenerationState::Building)
        {
            return Ok(Some(g.generation));
        }
        if page.next_page_token.is_empty() {
            return Ok(None);
        }
        page_token = page.next_page_token;
    }
}

/// CancelBuild, then waits (a little) for the build to stop: the answer is
/// the generation's state then, CANCELLED once it has.
pub async fn cancel_build(
    client: &mut VectorClient,
    index: &str,
    generation: u64,
) -> Result<pb::GenerationState> {
    let answer = client
        .cancel_build(pb::CancelBuildRequest {
            index: index.to_owned(),
            generation,
        })
        .await?
        .into_inner()
        .generation
        .unwrap_or_default();
    let deadline = Instant::now() + CANCEL_WAIT;
    let mut state = answer.state();
    while state == pb::GenerationState::Building && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = generation_state(client, index, generation)
            .await?
            .unwrap_or(state);
    }
    Ok(state)
}

/// The state of one generation, if it is listed.
async fn generation_state(
    client: &mut VectorClient,
    index: &str,
    generation: u64,
) -> Result<Option<pb::GenerationState>> {
    let mut page_token = String::new();
    loop {
        let page = client
            .list_generations(pb::ListGenerationsRequest {
                index: index.to_owned(),
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        if let Some(g) = page.generations.iter().find(|g| g.generation == generation) {
            return Ok(Some(g.state()));
        }
        if page.next_page_token.is_empty() {
            return Ok(None);
        }
        page_token = page.next_page_token;
    }
}

/// CancelTrialRun: true when the run was still going.
pub async fn cancel_run(client: &mut VectorClient, run_id: &str) -> Result<bool> {
    Ok(client
        .cancel_trial_run(pb::CancelTrialRunRequest {
            run_id: run_id.to_owned(),
        })
        .await?
        .into_inner()
        .cancelled)
}

/// A generation state as people read it (`CANCELLED`).
pub fn state_name(state: pb::GenerationState) -> &'static str {
    state.as_str_name().trim_start_matches("GENERATION_STATE_")
}
