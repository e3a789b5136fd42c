//! The router's limit on a gRPC message, as `RESOURCE_EXHAUSTED` naming
//! it: tonic's own limit answers `OUT_OF_RANGE` ("decoded message length
//! too large"), a code that says nothing of a limit. A layer over every
//! service reads each request body's gRPC message prefixes as they pass
//! and fails the body, with the status, at the first message over the
//! limit: before a byte of it is buffered, in a unary call or a stream.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::{Status, body::Body, codegen::http};

/// The layer, for `Server::layer`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageLimit {
    /// The frame limit (`--max-frame`); a message may carry that much
    /// payload plus [`FIELDS`] for the call's other fields.
    pub(crate) max_frame: usize,
}

/// Room in a message for what is not payload.
pub(crate) const FIELDS: usize = 64 * 1024;

impl MessageLimit {
    pub(crate) fn max_message(&self) -> usize {
        self.max_frame.saturating_add(FIELDS)
    }
}

impl<S> tower::Layer<S> for MessageLimit {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited { inner, limit: *self }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Limited<S> {
    inner: S,
    limit: MessageLimit,
}

impl<S> tower::Service<http::Request<Body>> for Limited<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limit = self.limit;
        self.inner.call(request.map(|body| Body::new(LimitedBody::new(body, limit))))
    }
}

/// A request body checked message by message.
struct LimitedBody {
    inner: Body,
    limit: MessageLimit,
    /// The 5-byte prefix (flag, u32 length) being read.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Message bytes still to pass before the next prefix.
    skip: usize,
    failed: bool,
}

impl LimitedBody {
    fn new(inner: Body, limit: MessageLimit) -> Self {
        Self { inner, limit, prefix: [0; 5], prefix_len: 0, skip: 0, failed: false }
    }

    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                let max = self.limit.max_message();
                if len > max {
                    return Err(too_large(len, self.limit));
                }
                self.skip = len;
            }
        }
        Ok(())
    }
}

/// `RESOURCE_EXHAUSTED`, naming the limit and the flag that sets it.
pub(crate) fn too_large(len: usize, limit: MessageLimit) -> Status {
    Status::resource_exhausted(format!(
        "a gRPC message of {len} bytes exceeds the router's limit of {} bytes (the frame limit, --max-frame, of {} bytes plus {} for the call's fields)",
        limit.max_message(),
        limit.max_frame,
        FIELDS
    ))
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = self.scan(data)
                {
                    self.failed = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Some(Ok(frame))
            }
            other => other,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(limit: usize) -> LimitedBody {
        LimitedBody::new(Body::empty(), MessageLimit { max_frame: limit - FIELDS })
    }

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend(len.to_be_bytes());
        m.resize(5 + len as usize, 7);
        m
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_chunks_and_the_next_is_refused() {
        let limit = FIELDS + 100;
        let mut stream = message(limit as u32);
        stream.extend(message(0));
        stream.extend(message(3));
        for chunk in [1, 2, 5, 1000] {
            let mut b = body(limit);
            for piece in stream.chunks(chunk) {
                b.scan(piece).expect("within the limit");
            }
            let mut over = message(limit as u32 + 1);
            over.truncate(9);
            let status = over.chunks(chunk).map(|p| b.scan(p)).find_map(Result::err).expect("refused");
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(status.message().contains(&format!("limit of {limit} bytes")), "{}", status.message());
        }
    }
}
