//! `Admin.Monitor`: a watch on the host's tap (`host::tap`) as a gRPC
//! stream, one `MonitorLine` per call (and per event), served to the
//! router's own uid only (the Admin interceptor checks the peer).
//!
//! The stream takes lines from the watch's bounded queue as the client
//! reads them; while the client does not read, the queue fills and the
//! tap drops lines, counted. The count is sent as a `Dropped` line as soon
//! as the queue runs dry, which is where the lost lines were. The stream
//! ends when the router leaves.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use polis_mesh::pb::{self, monitor_line::Kind};
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;

use crate::host::Watch;

/// A watch as the lines of `Admin.Monitor`.
pub(crate) struct MonitorStream {
    watch: Watch,
    leaving: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl MonitorStream {
    pub(crate) fn new(watch: Watch, leaving: tokio_util::sync::CancellationToken) -> Self {
        Self { watch, leaving: Box::pin(leaving.cancelled_owned()) }
    }
}

impl Stream for MonitorStream {
    type Item = Result<pb::MonitorLine, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.leaving.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if let Some(line) = self.watch.try_next() {
            return Poll::Ready(Some(Ok(line)));
        }
        // Lines are dropped only while the queue is full, so by the time it
        // is empty every loss so far is counted.
        let count = self.watch.take_dropped();
        if count > 0 {
            return Poll::Ready(Some(Ok(pb::MonitorLine {
                kind: Some(Kind::Dropped(pb::Dropped { count })),
            })));
        }
        self.watch.poll_next(cx).map(|line| line.map(Ok))
    }
}
