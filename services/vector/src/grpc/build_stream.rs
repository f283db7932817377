//! The stream of a build RPC (CreateIndex, RebuildIndex) on the shared
//! contract: `started` first, progress samples, exactly one `finished` for
//! every outcome, whether the client stays or not.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_shared::status::{ok_rpc_status, to_rpc_status, to_status};
use tonic::Status;
use tracing::Instrument as _;

use crate::progress::{BuildEvent, BuildTicket, Progress};
use crate::service::{IndexView, VectorService};

use super::convert::{generation_pb, index_pb, progress_pb};

/// A server stream of RPC messages.
pub(super) type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The messages of a build stream, in the contract's shape: `started`,
/// progress, and one `finished` for every outcome.
pub(super) enum BuildMessage {
    Started(pb::BuildStarted),
    Progress(pb::BuildProgress),
    Finished(Box<pb::BuildFinished>),
}

/// Both build RPCs answer with the same three events, each in its own
/// response type (AIP: one response message per RPC).
macro_rules! build_response {
    ($response:ty, $event:ident) => {
        impl From<BuildMessage> for $response {
            fn from(message: BuildMessage) -> Self {
                use pb::$event::Event;
                Self {
                    event: Some(match message {
                        BuildMessage::Started(s) => Event::Started(s),
                        BuildMessage::Progress(p) => Event::Progress(p),
                        BuildMessage::Finished(f) => Event::Finished(*f),
                    }),
                }
            }
        }
    };
}
build_response!(pb::CreateIndexResponse, create_index_response);
build_response!(pb::RebuildIndexResponse, rebuild_index_response);

pub(super) fn build_stream<T: From<BuildMessage> + Send + 'static>(
    service: Arc<VectorService>,
    ticket: BuildTicket,
) -> EventStream<T> {
    let wrap = T::from;
    let BuildTicket {
        index,
        generation,
        replayed,
        mut events,
    } = ticket;
    let stream = async_stream(move |tx| async move {
        let started = pb::BuildStarted {
            index: index.clone(),
            generation,
            replayed,
        };
        if tx
            .send(Ok(wrap(BuildMessage::Started(started))))
            .await
            .is_err()
        {
            return;
        }
        let mut last: Option<Progress> = None;
        loop {
            let event = events.borrow_and_update().clone();
            match event {
                BuildEvent::Progress(p) => {
                    let closing = last.and_then(|l| l.closing(&p));
                    for p in closing.into_iter().chain([p]) {
                        if tx
                            .send(Ok(wrap(BuildMessage::Progress(progress_pb(p)))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    last = Some(p);
                }
                BuildEvent::Finished(outcome) => {
                    let status = match &outcome {
                        Ok(()) => ok_rpc_status(),
                        Err(error) => to_rpc_status(&to_status(&**error)),
                    };
                    let view = service.list_generations(&index).ok();
                    let finished = pb::BuildFinished {
                        status: Some(status),
                        index: view.as_ref().map(|(record, _)| {
                            index_pb(&IndexView {
                                record: record.clone(),
                                memory_bytes: 0,
                                current_dataset_version: None,
                                load_error: None,
                                damaged: None,
                            })
                        }),
                        generation: view.as_ref().and_then(|(record, gens)| {
                            gens.iter()
                                .find(|g| g.generation == generation)
                                .map(|g| generation_pb(g, record.active))
                        }),
                    };
                    let _ = tx
                        .send(Ok(wrap(BuildMessage::Finished(Box::new(finished)))))
                        .await;
                    return;
                }
            }
            if events.changed().await.is_err() {
                // The build's sender is gone without an outcome: say so.
                let lost = Status::internal("the build stopped without reporting an outcome");
                let _ = tx
                    .send(Ok(wrap(BuildMessage::Finished(Box::new(
                        pb::BuildFinished {
                            status: Some(to_rpc_status(&lost)),
                            index: None,
                            generation: None,
                        },
                    )))))
                    .await;
                return;
            }
        }
    });
    Box::pin(stream)
}

/// A stream fed by a task through a small channel.
pub(super) fn async_stream<T, F, Fut>(body: F) -> impl Stream<Item = Result<T, Status>> + Send
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // In the call's span, so what the task calls joins the call's trace.
    tokio::spawn(body(tx).in_current_span());
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
