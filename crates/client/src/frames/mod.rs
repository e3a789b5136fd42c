//! The frame transport: length-delimited `Frame`s on `router.sock` after
//! the polis preamble, as `frame.proto` describes, instead of gRPC.
//!
//! - `conn`: one connection: the preamble, the reader and writer tasks
//!   (owned, aborted when the last handle goes), the table of calls in
//!   flight matched by id, and `Cancel` when a call is dropped early.
//! - `session`: a frontend's session on a connection (`SessionHello`,
//!   keepalives, `Goodbye`, `RouterLeaving`).

mod conn;
mod session;
#[cfg(test)]
mod tests;

pub(crate) use conn::{FrameConn, FrameStream, HUNG_UP, was_not_run};
pub(crate) use session::{Ended, FrameSession};
