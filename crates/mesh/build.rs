//! Compiles `proto/polis/v1/*.proto` with protox (pure Rust, so no system
//! `protoc`) and generates prost messages plus tonic clients and servers.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files =
        ["polis/v1/payload.proto", "polis/v1/session.proto", "polis/v1/frame.proto", "polis/v1/router.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let fds = protox::compile(files, [&root])?;

    // The descriptor set also feeds gRPC reflection in the router.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("polis_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        // Payloads pass through the router untouched: `Bytes` avoids copies.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
