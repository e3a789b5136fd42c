//! A router's `AttachModule` gRPC stream bridged onto an in-memory duplex,
//! so that a re-attached module serves it like stdin and stdout, whatever
//! carries the channel (the router's socket on this machine, or TCP to a
//! router on another).

use polis_discovery::NodeRecord;
use polis_mesh::{
    codec::{FrameCodec, FrameReader, FrameWriter},
    pb::{Frame, router_client::RouterClient},
};
use tokio::{
    io::{DuplexStream, ReadHalf, WriteHalf},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::Channel;

use crate::OUTBOX;

/// A link to a router (`Router.AttachModule`), presented as a byte stream
/// of frames, so that the session code serves it exactly as it serves
/// stdin and stdout.
pub(crate) struct Bridge {
    module_side: Option<DuplexStream>,
    // Both directions stop when the bridge drops.
    _up: AbortOnDropHandle<()>,
    _down: AbortOnDropHandle<()>,
}

impl Bridge {
    /// Connects to `router`'s socket on this machine and starts both
    /// directions; `name` is the module's, for messages.
    pub(crate) async fn connect(router: &NodeRecord, name: String) -> Result<Self, String> {
        let endpoint = router.endpoint.clone().unwrap_or_default();
        let path =
            endpoint.strip_prefix("unix:").ok_or_else(|| format!("endpoint {endpoint:?} is not unix:"))?;
        let channel = polis_mesh::transport::connect_channel(std::path::Path::new(path))
            .await
            .map_err(|err| err.to_string())?;
        Ok(Self::over(channel, name))
    }

    /// Attaches over `channel`, already connected (and authenticated) to a
    /// router, and starts both directions.
    pub(crate) fn over(channel: Channel, name: String) -> Self {
        let (module_side, bridge_side) = tokio::io::duplex(256 * 1024);
        let (from_module, to_module) = tokio::io::split(bridge_side);
        let (out_tx, out_rx) = mpsc::channel::<Frame>(OUTBOX);

        let up = async move {
            let mut frames = FrameReader::new(from_module, FrameCodec::default());
            while let Ok(Some(frame)) = frames.read_frame().await {
                if out_tx.send(frame).await.is_err() {
                    break;
                }
            }
        };
        let down = async move {
            let mut client = RouterClient::new(channel);
            let mut frames = FrameWriter::new(to_module, FrameCodec::default());
            let response = match client.attach_module(ReceiverStream::new(out_rx)).await {
                Ok(response) => response,
                Err(status) => {
                    eprintln!("{name}: the router refused to attach it: {}", status.message());
                    let _ = frames.shutdown().await;
                    return;
                }
            };
            let mut inbound = response.into_inner();
            while let Ok(Some(frame)) = inbound.message().await {
                if frames.write_frame(&frame).await.is_err() {
                    break;
                }
            }
            // The module reads the end of its input: the link is lost. (Only
            // dropping this half would not do: the other half keeps the pipe.)
            let _ = frames.shutdown().await;
        };
        Self {
            module_side: Some(module_side),
            _up: AbortOnDropHandle::new(tokio::spawn(up)),
            _down: AbortOnDropHandle::new(tokio::spawn(down)),
        }
    }

    /// The module's ends of the bridge, to serve as a link.
    pub(crate) fn take_module_side(&mut self) -> (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>) {
        tokio::io::split(self.module_side.take().expect("taken once"))
    }
}
