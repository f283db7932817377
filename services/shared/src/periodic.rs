//! The one loop behind every background flush and sweep (the audit
//! journal's flush, the error journal's flush, storage's leftover sweep,
//! ingest's orphan sweep): a round every interval until the process stops,
//! rounds never overlapping, a slow round delaying the next instead of
//! triggering a burst to catch up.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Runs `round` every `interval`, the first one interval after the start,
/// until `stop` is cancelled; a round in progress finishes first. `wake`,
/// when given, runs a round early (a buffer that filled up). A zero
/// interval disables the loop. A round reports its own failures: the next
/// round is the retry.
pub async fn every<F, Fut>(
    interval: Duration,
    stop: &CancellationToken,
    wake: Option<&Notify>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    if interval.is_zero() {
        return;
    }
    let start = tokio::time::Instant::now() + interval;
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A notification sent during a round is kept by `Notify` as a
        // permit, so this sees it: none is lost.
        let woken = async {
            match wake {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
            () = woken => {}
        }
        round().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rounds_come_every_interval_early_when_woken_and_stop_when_told() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let task = {
            let (rounds, stop, wake) = (rounds.clone(), stop.clone(), wake.clone());
            tokio::spawn(async move {
                every(Duration::from_secs(10), &stop, Some(&wake), || {
                    let rounds = rounds.clone();
                    async move {
                        rounds.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await;
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 0, "none before one interval");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 2, "woken early");
        stop.cancel();
        task.await.expect("the loop ends");
        let done = rounds.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), done, "nothing after stop");
    }

    #[tokio::test]
    async fn a_zero_interval_runs_nothing() {
        let stop = CancellationToken::new();
        let mut ran = false;
        every(Duration::ZERO, &stop, None, || {
            ran = true;
            async {}
        })
        .await;
        assert!(!ran);
    }
}
