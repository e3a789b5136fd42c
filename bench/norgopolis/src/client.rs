//! `norgopolis-bench-client`: Norgopolis's side of `polis-bench`'s
//! measurements, on `norgopolis-client` 0.6.0 (with `autostart-server`).
//!
//! Usage, one measurement per run, its result as one JSON line on stdout:
//! - `warm CALLS WARMUP BYTES`: sequential `echo` calls with a BYTES-long
//!   MessagePack payload; prints `{"ns":[..]}`, each call's round trip.
//! - `throughput CALLERS SECS BYTES`: CALLERS connections calling in a loop
//!   for SECS seconds; prints `{"calls":N,"errors":N,"secs":S}`.
//! - `cold BYTES`: connect (the library launches `norgopolis-server` from
//!   `PATH` when none answers) and make one call; prints `{"ok":true}`, or
//!   the error on stderr and exits 1.
//!
//! The runtime is current-thread, like polis's client side in the bench.

use std::time::{Duration, Instant};

use norgopolis_client::{ConnectionHandle, MessagePack};

const HOST: &str = "127.0.0.1";
const PORT: &str = "62020";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("norgopolis-bench-client: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<()> {
    let num = |i: usize| -> Result<u64> {
        let text = args.get(i).ok_or("missing argument; see the file's doc comment")?;
        Ok(text.parse()?)
    };
    match args.first().map(String::as_str) {
        Some("warm") => warm(num(1)?, num(2)?, num(3)? as usize).await,
        Some("throughput") => throughput(num(1)?, Duration::from_secs(num(2)?), num(3)? as usize).await,
        Some("cold") => cold(num(1)? as usize).await,
        _ => Err("usage: norgopolis-bench-client warm|throughput|cold ARGS".into()),
    }
}

/// A MessagePack string of exactly `bytes` bytes (2-byte header, `bytes >= 34`).
fn payload(bytes: usize) -> Vec<u8> {
    let len = bytes - 2;
    let mut data = vec![0xd9, len as u8];
    data.resize(bytes, b'x');
    data
}

async fn connect() -> Result<ConnectionHandle> {
    Ok(norgopolis_client::connect(&HOST.into(), &PORT.into()).await.map_err(|e| e.to_string())?)
}

/// One `echo` call; checks the reply is the payload.
async fn echo(conn: &mut ConnectionHandle, data: &[u8]) -> Result<()> {
    let args = Some(MessagePack { data: data.to_vec() });
    let mut items = conn.invoke_raw("echo".into(), "echo".into(), args).await?.into_inner();
    let mut replies = 0;
    while let Some(item) = items.message().await? {
        if item.data != data {
            return Err("echo answered with other bytes".into());
        }
        replies += 1;
    }
    if replies != 1 {
        return Err(format!("echo answered with {replies} items, not 1").into());
    }
    Ok(())
}

async fn warm(calls: u64, warmup: u64, bytes: usize) -> Result<()> {
    let data = payload(bytes);
    let mut conn = connect().await?;
    for _ in 0..warmup {
        echo(&mut conn, &data).await?;
    }
    let mut ns = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let start = Instant::now();
        echo(&mut conn, &data).await?;
        ns.push(start.elapsed().as_nanos().to_string());
    }
    println!("{{\"ns\":[{}]}}", ns.join(","));
    Ok(())
}

async fn throughput(callers: u64, secs: Duration, bytes: usize) -> Result<()> {
    let data = payload(bytes);
    let mut conns = Vec::new();
    for _ in 0..callers {
        let mut conn = connect().await?;
        echo(&mut conn, &data).await?;
        conns.push(conn);
    }
    let start = Instant::now();
    let deadline = start + secs;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let data = data.clone();
            tokio::spawn(async move {
                let (mut calls, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    match echo(&mut conn, &data).await {
                        Ok(()) => calls += 1,
                        Err(_) => errors += 1,
                    }
                }
                (calls, errors)
            })
        })
        .collect();
    let (mut calls, mut errors) = (0, 0);
    for task in tasks {
        let (c, e) = task.await?;
        calls += c;
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{{\"calls\":{calls},\"errors\":{errors},\"secs\":{secs}}}");
    Ok(())
}

async fn cold(bytes: usize) -> Result<()> {
    let mut conn = connect().await?;
    echo(&mut conn, &payload(bytes)).await?;
    println!("{{\"ok\":true}}");
    Ok(())
}
