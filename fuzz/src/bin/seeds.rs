//! Writes the seed corpus into `fuzz/seeds/<target>/`: frames of each kind
//! built with prost, the example manifests, the committed sample record and
//! JSON-RPC lines of each shape, frontends' frame sessions, and gRPC
//! requests as HTTP/2 frames. Run from `fuzz/`: `cargo run --bin seeds`.

use std::{fs, path::Path};

use bytes::Bytes;
use polis_mesh::{
    codec::encode_frame,
    preamble,
    pb::{self, Frame, frame::Kind, reply::Outcome},
};
use prost::Message;

fn frames() -> Vec<(&'static str, Frame)> {
    let payload = |data: &'static [u8]| pb::Payload {
        content_type: polis_mesh::JSON.into(),
        data: Bytes::from_static(data),
    };
    let frame = |kind| Frame { kind: Some(kind) };
    vec![
        (
            "hello",
            frame(Kind::Hello(pb::Hello {
                name: "echo".into(),
                version: "0.1.0".into(),
                protocol_version: polis_mesh::PROTOCOL_VERSION,
                node_id: "9b2f4c1e-6a55-4f0b-9e64-3f7c2d8a1b00".into(),
                resumed: true,
                pid: 1234,
                ..Default::default()
            })),
        ),
        (
            "welcome",
            frame(Kind::Welcome(pb::Welcome {
                router_id: "5d1e7a2c-0b3f-4c8d-a9e1-7f6b2c4d8e10".into(),
                epoch: 7,
                config_json: Bytes::from_static(br#"{"greeting":"hi"}"#),
            })),
        ),
        (
            "request",
            frame(Kind::Request(pb::Request {
                id: 42,
                method: "echo".into(),
                payload: Some(payload(b"{\n \"a\": [1, 2]\n}")),
                caller: "nvim".into(),
                timeout_ms: 5000,
                ..Default::default()
            })),
        ),
        (
            "reply",
            frame(Kind::Reply(pb::Reply {
                id: 42,
                outcome: Some(Outcome::Payload(payload(b"3"))),
                more: true,
            })),
        ),
        (
            "reply-error",
            frame(Kind::Reply(pb::Reply {
                id: 43,
                outcome: Some(Outcome::Error(pb::Error { code: -1, message: "no such method".into() })),
                more: false,
            })),
        ),
        ("reply-end", frame(Kind::Reply(pb::Reply { id: 42, outcome: None, more: false }))),
        ("cancel", frame(Kind::Cancel(pb::Cancel { id: 42 }))),
        ("shutdown", frame(Kind::Shutdown(pb::Shutdown { grace_ms: 2000 }))),
    ]
}

const LINES: [(&str, &str); 7] = [
    ("result", r#"{"jsonrpc":"2.0","id":4,"result":{"a": [1, 2]}}"#),
    ("result-null", r#"{"jsonrpc": "2.0", "id": 5, "result": null}"#),
    ("error", r#"{"jsonrpc":"2.0","id":6,"error":{"code":-32601,"message":"no such method"}}"#),
    ("error-grpc", r#"{"jsonrpc":"2.0","id":7,"error":{"code":14}}"#),
    ("item", r#"{"jsonrpc":"2.0","method":"$/item","params":{"id":9,"value":"x"}}"#),
    ("notification", r#"{"jsonrpc":"2.0","method":"$/log","params":"hi"}"#),
    ("initialize-reply", r#"{"jsonrpc":"2.0","id":0,"result":{}}"#),
];

/// Frame sessions as a frontend opens them: each a stream after the preamble.
fn sessions() -> Vec<(&'static str, Vec<u8>)> {
    let frame = |kind| encode_frame(&Frame { kind: Some(kind) }).to_vec();
    let request = |id, service: &str, stream| {
        frame(Kind::Request(pb::Request {
            id,
            service: service.into(),
            method: "ping".into(),
            payload: Some(pb::Payload { content_type: polis_mesh::JSON.into(), data: Bytes::from_static(b"1") }),
            timeout_ms: 1000,
            stream,
            ..Default::default()
        }))
    };
    let hello = frame(Kind::SessionHello(pb::SessionHello {
        node_id: "9b2f4c1e-6a55-4f0b-9e64-3f7c2d8a1b00".into(),
        name: "nvim".into(),
        pid: 1234,
        client_version: "0.1.0".into(),
        protocol_versions: polis_mesh::versions::SESSION_PROTOCOLS.to_vec(),
        ..Default::default()
    }));
    let start = preamble::encode(preamble::VERSION).to_vec();
    let session = [
        &start[..],
        &hello,
        &request(1, "echo", false),
        &frame(Kind::Keepalive(pb::Keepalive { seq: 1 })),
        &request(2, "nosuch", true),
        &frame(Kind::Cancel(pb::Cancel { id: 2 })),
        &frame(Kind::Goodbye(pb::Goodbye {})),
    ]
    .concat();
    let events = [
        &start[..],
        &frame(Kind::Subscribe(pb::Subscribe { id: 1, pattern: "editor.*".into() })),
        &frame(Kind::Publish(pb::Publish { topic: "editor.saved".into(), payload: None })),
        &frame(Kind::Unsubscribe(pb::Unsubscribe { id: 1 })),
    ]
    .concat();
    vec![
        ("session", session),
        ("one-shot", [&start[..], &request(7, "echo", false)].concat()),
        ("reused-id", [&start[..], &request(3, "echo", true), &request(3, "echo", false)].concat()),
        ("hello-twice", [&start[..], &hello, &hello].concat()),
        ("events", events),
        ("module-frame", [&start[..], &frame(Kind::Shutdown(pb::Shutdown { grace_ms: 1 }))].concat()),
        ("garbage", [&start[..], &b"\xff\xff\xff\xffjunk"[..]].concat()),
        ("empty-frame", [&start[..], &[0, 0, 0, 0][..]].concat()),
        ("other-version", preamble::encode(9).to_vec()),
        ("grpc", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
    ]
}

/// HTTP/2 frames as a gRPC client sends them after its preface.
fn grpc_requests() -> Vec<(&'static str, Vec<u8>)> {
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    };
    let headers = |authority: &[u8]| {
        let fields: [(&[u8], &[u8]); 7] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/polis.v1.Router/Call"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"grpc-timeout", b"3S"),
            (b"te", b"trailers"),
        ];
        fluke_hpack::Encoder::new().encode(fields)
    };
    let settings = frame(0x4, 0, 0, &[0, 0x4, 0, 0x10, 0, 0]);
    let grpcio = headers(b"tmp%2Fmesh%2Frouter.sock");
    let grpcurl = headers(b"/tmp/mesh/router.sock");
    let (first, rest) = grpcurl.split_at(grpcurl.len() / 2);
    let data = frame(0x0, 0x1, 1, &[0, 0, 0, 0, 2, 0x0a, 0]);
    let padded = [&[3][..], &[0x80, 0, 0, 0, 16][..], &grpcio, &[0, 0, 0][..]].concat();
    vec![
        ("grpcio", [&settings[..], &frame(0x1, 0x4, 1, &grpcio), &data].concat()),
        ("split", [&settings[..], &frame(0x1, 0, 1, first), &frame(0x9, 0x4, 1, rest), &data].concat()),
        ("padded-priority", [&settings[..], &frame(0x1, 0x4 | 0x8 | 0x20, 1, &padded)].concat()),
        (
            "two-streams",
            [&frame(0x1, 0x5, 1, &headers(b"localhost")), &frame(0x1, 0x5, 3, &grpcio)[..]].concat(),
        ),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    let repo = root.parent().unwrap();

    // frame_decoder: [limit: u16 BE][chunk seed][stream].
    let dir = seeds.join("frame_decoder");
    let mut all = Vec::new();
    for (name, frame) in frames() {
        let bytes = encode_frame(&frame);
        all.extend_from_slice(&bytes);
        write(&dir, name, &[&[0x04, 0x00, 0][..], &bytes].concat());
    }
    // Every kind back to back, chunked; then the same under a limit that
    // cuts the stream short.
    write(&dir, "all-chunked", &[&[0x04, 0x00, 0x5a][..], &all].concat());
    write(&dir, "all-small-limit", &[&[0x00, 0x20, 0x07][..], &all].concat());

    // jsonrpc_line: [direction][line or frame].
    let dir = seeds.join("jsonrpc_line");
    for (name, line) in LINES {
        write(&dir, name, &[b"\0", line.as_bytes()].concat());
    }
    for (name, frame) in frames() {
        write(&dir, &format!("frame-{name}"), &[&[1][..], &frame.encode_to_vec()].concat());
    }

    // manifest: the example manifests as they are.
    let dir = seeds.join("manifest");
    for module in ["echo", "counter", "pyecho"] {
        let text = fs::read(repo.join(format!("modules/{module}/module.toml"))).unwrap();
        write(&dir, module, &text);
    }
    let full = r#"name = "pyecho"
version = "1.2.3-rc.1+build"
description = "every field"
exec = "pyecho.py"
args = ["-u", "--quiet"]
protocol = "jsonrpc"
depends = ["echo >=0.1, <2", "counter"]
autostart = true
restart = "always"

[env]
PYTHONUNBUFFERED = "1"

[config]
greeting = "hi"
nested = { list = [1, 2.5, true, 1979-05-27T07:32:00Z], table = { a = "b" } }
"#;
    write(&dir, "every-field", full.as_bytes());

    // record: the committed sample, and a router record with an epoch.
    let dir = seeds.join("record");
    let sample = fs::read(repo.join("crates/discovery/tests/data/record-v1.json")).unwrap();
    write(&dir, "record-v1", &sample);
    let router = r#"{"format":1,"id":"5d1e7a2c-0b3f-4c8d-a9e1-7f6b2c4d8e10","role":"router","name":"router","pid":99,"started_at":"2026-11-21T10:00:00Z","endpoint":"unix:/run/user/1000/polis/router.sock","epoch":3}"#;
    write(&dir, "router", router.as_bytes());

    // frame_session: a client's whole byte stream.
    let dir = seeds.join("frame_session");
    for (name, bytes) in sessions() {
        write(&dir, name, &bytes);
    }

    // authority: [chunk seed][the bytes after the HTTP/2 preface].
    let dir = seeds.join("authority");
    for (name, bytes) in grpc_requests() {
        write(&dir, name, &[&[0][..], &bytes].concat());
        write(&dir, &format!("{name}-chunked"), &[&[0x1d][..], &bytes].concat());
    }
}
