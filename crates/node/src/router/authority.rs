//! Lets stock gRPC clients of the Unix socket in: rewrites an HTTP/2
//! request's `:authority` that is not a URI authority to `localhost`
//! before h2 sees it.
//!
//! grpcio (C core) sends the socket path percent-encoded as `:authority`
//! (`tmp%2Fmesh%2Frouter.sock`), grpcurl and grpc-java send it raw
//! (`/tmp/mesh/router.sock`). h2 answers either with `RST_STREAM
//! PROTOCOL_ERROR` and has no option to accept it (hyperium/h2#487 is
//! unmerged), and nothing above h2 (hyper, tonic) sees the request. The
//! authority means nothing on a local socket, so the router reads the
//! client's side of a gRPC connection through [`Fixed`]: frames pass
//! through as they are, except header blocks (HEADERS and CONTINUATION),
//! which are decoded with HPACK (mirroring the client's dynamic table) and
//! encoded again as literals that leave h2's table empty, with a bad
//! `:authority` replaced. The server's side is not touched.
//!
//! `grpc-timeout` is renamed [`DEADLINE_HEADER`] on the way: tonic's server
//! would otherwise end a call at that deadline itself with `CANCELLED`
//! ("Timeout expired"), and only up to a stream's first reply; the router
//! reads the deadline from the renamed header (`service.rs`) and ends the
//! call with `DEADLINE_EXCEEDED`, cancelling it in the module.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The client connection preface, passed through as it is.
const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer accepts; rewritten blocks
/// are cut to it.
const MAX_FRAME: usize = 16_384;
/// The dynamic table a client may use: h2 advertises none other than
/// HTTP/2's default.
const TABLE_SIZE: usize = 4096;
/// The most a header block may take, encoded or decoded. h2 refuses header
/// lists over 16 KiB; a block this much larger is hostile.
const MAX_BLOCK: usize = 256 * 1024;
/// The authority given to requests whose own is not one.
const LOCAL: &[u8] = b"localhost";
/// What `grpc-timeout` is called once h2 reads it.
pub(crate) const DEADLINE_HEADER: &str = "polis-grpc-timeout";

/// A connection's client side as h2 should read it. Writes pass through.
pub(crate) struct Fixed<T> {
    inner: T,
    fix: AuthorityFix,
    /// Rewritten bytes not yet read.
    out: BytesMut,
    scratch: Box<[u8]>,
}

impl<T> Fixed<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self { inner, fix: AuthorityFix::default(), out: BytesMut::new(), scratch: vec![0; 16 * 1024].into() }
    }
}

impl<T: Connected> Connected for Fixed<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Fixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The end, wherever it falls: h2 judges a cut frame.
                return Poll::Ready(Ok(()));
            }
            this.fix
                .push(read.filled(), &mut this.out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Fixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a client's bytes could not be rewritten; the connection ends, as h2
/// would have ended it.
#[derive(Debug, thiserror::Error)]
#[error("malformed HTTP/2 from a gRPC client: {0}")]
pub(crate) struct Malformed(&'static str);

/// The rewrite itself, without I/O: bytes in, bytes out, in any chunks.
#[derive(Default)]
pub(crate) struct AuthorityFix {
    /// Preface bytes passed through so far.
    preface: usize,
    head: [u8; FRAME_HEAD],
    head_len: usize,
    state: State,
    /// The header block being collected over HEADERS and CONTINUATION.
    block: Option<Block>,
    hpack: Hpack,
}

#[derive(Default)]
enum State {
    /// Reading a frame header.
    #[default]
    Head,
    /// Passing this many payload bytes through.
    Pass(usize),
    /// Collecting a HEADERS or CONTINUATION payload.
    Payload { kind: u8, flags: u8, stream: u32, len: usize, buf: Vec<u8> },
}

struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

impl AuthorityFix {
    /// Consumes all of `input`, appending what h2 should read to `out`.
    pub(crate) fn push(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), Malformed> {
        while !input.is_empty() {
            if self.preface < PREFACE_LEN {
                let n = (PREFACE_LEN - self.preface).min(input.len());
                out.extend_from_slice(&input[..n]);
                self.preface += n;
                input = &input[n..];
                continue;
            }
            match &mut self.state {
                State::Head => {
                    let n = (FRAME_HEAD - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == FRAME_HEAD {
                        self.head_len = 0;
                        self.frame_started(out)?;
                    }
                }
                State::Pass(left) => {
                    let n = (*left).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    *left -= n;
                    input = &input[n..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Payload { len, buf, .. } => {
                    let n = (*len - buf.len()).min(input.len());
                    buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if buf.len() == *len {
                        self.payload_done(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn frame_started(&mut self, out: &mut BytesMut) -> Result<(), Malformed> {
        let h = self.head;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        match kind {
            HEADERS | CONTINUATION => {
                if (kind == CONTINUATION) != self.block.is_some() {
                    return Err(Malformed("a CONTINUATION frame out of place"));
                }
                if len > MAX_BLOCK {
                    return Err(Malformed("a header block too large"));
                }
                self.state = State::Payload { kind, flags, stream, len, buf: Vec::with_capacity(len) };
                if len == 0 {
                    self.payload_done(out)?;
                }
            }
            _ if self.block.is_some() => return Err(Malformed("a header block left unfinished")),
            _ => {
                out.extend_from_slice(&h);
                self.state = if len == 0 { State::Head } else { State::Pass(len) };
            }
        }
        Ok(())
    }

    fn payload_done(&mut self, out: &mut BytesMut) -> Result<(), Malformed> {
        let State::Payload { kind, flags, stream, buf, .. } = std::mem::take(&mut self.state) else {
            unreachable!("called with a payload collected");
        };
        if kind == HEADERS {
            let mut rest = &buf[..];
            if flags & PADDED != 0 {
                let (&pad, after) =
                    rest.split_first().ok_or(Malformed("a HEADERS frame without its padding"))?;
                let keep = after.len().checked_sub(usize::from(pad)).ok_or(Malformed("padding too long"))?;
                rest = &after[..keep];
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let (p, after) =
                    rest.split_first_chunk::<5>().ok_or(Malformed("a HEADERS frame cut short"))?;
                priority = Some(*p);
                rest = after;
            }
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: rest.to_vec(),
            });
        } else {
            let block = self.block.as_mut().ok_or(Malformed("a CONTINUATION frame out of place"))?;
            if block.stream != stream {
                return Err(Malformed("a CONTINUATION frame on another stream"));
            }
            if block.fragment.len() + buf.len() > MAX_BLOCK {
                return Err(Malformed("a header block too large"));
            }
            block.fragment.extend_from_slice(&buf);
        }
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("a block is being collected");
            let mut fields = self.hpack.decode(&block.fragment)?;
            for (name, value) in &mut fields {
                if name == b":authority" && !is_authority(value) {
                    *value = LOCAL.to_vec();
                } else if name == b"grpc-timeout" {
                    *name = DEADLINE_HEADER.as_bytes().to_vec();
                }
            }
            emit(&block, &encode(&fields), out);
        }
        Ok(())
    }
}

fn is_authority(value: &[u8]) -> bool {
    tonic::codegen::http::uri::Authority::try_from(value).is_ok()
}

/// HEADERS (and CONTINUATION frames if needed) carrying `encoded`.
fn emit(block: &Block, encoded: &[u8], out: &mut BytesMut) {
    let first_room = MAX_FRAME - if block.priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    frame_head(out, priority.len() + first.len(), HEADERS, flags, block.stream);
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = after;
        frame_head(
            out,
            chunk.len(),
            CONTINUATION,
            if rest.is_empty() { END_HEADERS } else { 0 },
            block.stream,
        );
        out.extend_from_slice(chunk);
    }
}

fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Fields as HPACK literals without indexing, with literal names, and
/// without Huffman coding: h2's dynamic table stays empty, so it needs no
/// state from here.
fn encode(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        string(&mut out, name);
        string(&mut out, value);
    }
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: `value` with an N-bit prefix, the first byte's high bits
/// being `high`.
fn integer(out: &mut Vec<u8>, mut value: usize, prefix: u8, high: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK decoder (RFC 7541) that never panics: the client's dynamic
/// table mirrored, with Huffman strings decoded by fluke-hpack (whose own
/// decoder panics on some truncated input).
struct Hpack {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    huffman: Option<fluke_hpack::huffman::HuffmanDecoder>,
}

impl Default for Hpack {
    fn default() -> Self {
        Self { table: VecDeque::new(), size: 0, max: TABLE_SIZE, huffman: None }
    }
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

impl Hpack {
    fn decode(&mut self, mut buf: &[u8]) -> Result<Fields, Malformed> {
        let mut fields = Vec::new();
        let mut total = 0;
        while let Some(&first) = buf.first() {
            let field = if first & 0x80 != 0 {
                let index = read_integer(&mut buf, 7)?;
                let (name, value) = self.get(index)?;
                (name.to_vec(), value.to_vec())
            } else if first & 0xc0 == 0x40 {
                let field = self.literal(&mut buf, 6)?;
                self.insert(field.clone());
                field
            } else if first & 0xe0 == 0x20 {
                let max = read_integer(&mut buf, 5)?;
                if max > TABLE_SIZE {
                    return Err(Malformed("a dynamic table larger than allowed"));
                }
                self.max = max;
                self.evict();
                continue;
            } else {
                // Without indexing (0000) or never indexed (0001).
                self.literal(&mut buf, 4)?
            };
            total += field.0.len() + field.1.len() + 32;
            if total > MAX_BLOCK {
                return Err(Malformed("a header list too large"));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    fn literal(&mut self, buf: &mut &[u8], prefix: u8) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
        let index = read_integer(buf, prefix)?;
        let name = if index == 0 { self.read_string(buf)? } else { self.get(index)?.0.to_vec() };
        Ok((name, self.read_string(buf)?))
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), Malformed> {
        let missing = Malformed("a header index out of range");
        match index {
            0 => Err(missing),
            i if i <= STATIC.len() => Ok(STATIC[i - 1]),
            i => self.table.get(i - STATIC.len() - 1).map(|(n, v)| (&n[..], &v[..])).ok_or(missing),
        }
    }

    fn insert(&mut self, field: (Vec<u8>, Vec<u8>)) {
        self.size += field.0.len() + field.1.len() + 32;
        self.table.push_front(field);
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let Some((n, v)) = self.table.pop_back() else { break };
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn read_string(&mut self, buf: &mut &[u8]) -> Result<Vec<u8>, Malformed> {
        let huffman = buf.first().is_some_and(|b| b & 0x80 != 0);
        let len = read_integer(buf, 7)?;
        if len > buf.len() {
            return Err(Malformed("a header string cut short"));
        }
        let (s, rest) = buf.split_at(len);
        *buf = rest;
        if !huffman {
            return Ok(s.to_vec());
        }
        let decoder = self.huffman.get_or_insert_with(fluke_hpack::huffman::HuffmanDecoder::new);
        decoder.decode(s).map_err(|_| Malformed("a bad Huffman string"))
    }
}

/// RFC 7541 §5.1, reading; values past 2^28 are refused.
fn read_integer(buf: &mut &[u8], prefix: u8) -> Result<usize, Malformed> {
    let short = Malformed("a header integer cut short");
    let (&first, mut rest) = buf.split_first().ok_or(short)?;
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(first) & max;
    if value == max {
        let mut shift = 0;
        loop {
            let (&b, after) = rest.split_first().ok_or(Malformed("a header integer cut short"))?;
            rest = after;
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift > 21 {
                return Err(Malformed("a header integer too large"));
            }
        }
    }
    *buf = rest;
    Ok(value)
}

/// RFC 7541 Appendix A.
static STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    /// Splits rewritten output into frames: (kind, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..24], PREFACE);
        bytes = &bytes[24..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes(bytes[5..9].try_into().unwrap());
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    /// grpcio's HEADERS, as captured: literals with incremental indexing,
    /// Huffman-coded, `:authority` the percent-encoded socket path.
    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
        b.push(0x44); // :path, indexed name, incremental indexing
        string(&mut b, b"/polis.v1.Router/Call");
        b.push(0x41); // :authority, indexed name, incremental indexing
        string(&mut b, authority);
        b.push(0x40);
        string(&mut b, b"te");
        string(&mut b, b"trailers");
        b.push(0x00);
        string(&mut b, b"grpc-timeout");
        string(&mut b, b"2S");
        b
    }

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut fix = AuthorityFix::default();
        let mut out = BytesMut::new();
        for piece in input.chunks(chunk) {
            fix.push(piece, &mut out).expect("well-formed input");
        }
        out.to_vec()
    }

    fn decoded(block: &[u8]) -> Fields {
        Hpack::default().decode(block).expect("our own encoding decodes")
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        input.extend(frame(HEADERS, END_HEADERS, 1, &request_block(b"tmp%2Fm%2Frouter.sock")));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\x02hi")); // DATA
        // The same authority again, now from the dynamic table (index 63:
        // :authority was the second entry added, te the first).
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0x83, 0x86, 0xbf]));
        for chunk in [1, 7, 4096] {
            let out = frames(&run(&input, chunk));
            assert_eq!(out.len(), 4, "chunk {chunk}");
            assert_eq!(out[0], (0x4, 0, 0, vec![0, 3, 0, 0, 0, 100]));
            let (kind, flags, stream, block) = &out[1];
            assert_eq!((*kind, *flags, *stream), (HEADERS, END_HEADERS, 1));
            let fields = decoded(block);
            let want: Fields = [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/polis.v1.Router/Call"),
                (":authority", "localhost"),
                ("te", "trailers"),
                (DEADLINE_HEADER, "2S"),
            ]
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
            assert_eq!(fields, want);
            assert_eq!(out[2], (0x0, END_STREAM, 1, b"\0\0\0\0\x02hi".to_vec()));
            let third = decoded(&out[3].3);
            assert_eq!(third[2], (b":authority".to_vec(), b"localhost".to_vec()));
        }
    }

    #[test]
    fn a_valid_authority_padding_priority_and_continuations_survive() {
        let block = request_block(b"localhost:50051");
        let (a, b) = block.split_at(10);
        let mut headers = vec![2]; // pad length
        headers.extend([0x80, 0, 0, 0, 16]); // priority: exclusive on 0, weight 16
        headers.extend(a);
        headers.extend([0, 0]); // padding
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &headers));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, b));
        let out = frames(&run(&input, 3));
        assert_eq!(out.len(), 1);
        let (kind, flags, stream, payload) = &out[0];
        assert_eq!((*kind, *flags, *stream), (HEADERS, PRIORITY | END_STREAM | END_HEADERS, 5));
        assert_eq!(payload[..5], [0x80, 0, 0, 0, 16]);
        assert_eq!(decoded(&payload[5..])[3], (b":authority".to_vec(), b"localhost:50051".to_vec()));
    }

    #[test]
    fn a_large_block_is_cut_into_continuations() {
        let mut block = request_block(b"/tmp/router.sock");
        block.push(0x00);
        string(&mut block, b"x-big");
        string(&mut block, &[b'a'; 40_000]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block[..20_000.min(block.len())]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[20_000..]));
        let out = frames(&run(&input, 5000));
        let kinds: Vec<_> = out.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(kinds, [(HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)]);
        let whole: Vec<u8> = out.iter().flat_map(|f| f.3.clone()).collect();
        let fields = decoded(&whole);
        assert_eq!(fields[3].1, b"localhost");
        assert_eq!(fields[6].1.len(), 40_000);
    }

    #[test]
    fn hostile_blocks_are_errors_never_panics() {
        let bad: [&[u8]; 6] = [
            &[0x3f],                               // a size update cut short
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x7f], // an integer too large
            &[0xff, 0x00],                         // an index out of range
            &[0x40, 0x05, b'a'],                   // a string cut short
            &[0x00, 0x81, 0xff, 0x00],             // a bad Huffman string
            &[0x3f, 0xe2, 0x1f],                   // a table larger than allowed
        ];
        for block in bad {
            let mut input = PREFACE.to_vec();
            input.extend(frame(HEADERS, END_HEADERS, 1, block));
            let mut fix = AuthorityFix::default();
            assert!(fix.push(&input, &mut BytesMut::new()).is_err(), "{block:x?}");
        }
        // And any bytes at all: an error or a rewrite, never a panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut input = PREFACE.to_vec();
            let len = (seed % 64) as usize;
            let mut block = Vec::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                block.push(seed as u8);
            }
            input.extend(frame(HEADERS, END_HEADERS, 1, &block));
            let _ = AuthorityFix::default().push(&input, &mut BytesMut::new());
        }
    }

    #[test]
    fn a_continuation_out_of_place_is_an_error() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
        assert!(AuthorityFix::default().push(&input, &mut BytesMut::new()).is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"data"));
        assert!(AuthorityFix::default().push(&input, &mut BytesMut::new()).is_err());
    }
}
