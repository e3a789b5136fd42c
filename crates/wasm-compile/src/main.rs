//! `polis-wasm-compile NAME < MODULE.wasm > MODULE.cwasm`: compiles the
//! WebAssembly module on stdin (NAME is its file, for messages) with
//! polis-wasm's engine settings and writes the compiled code (wasmtime's
//! serialized form) to stdout. `polis-wasm` runs it on a cache miss and
//! caches what it prints; nothing else is written here, so the cache's
//! layout and key live in polis-wasm alone (crates/wasm/src/cache.rs).
//!
//! Exit status: 0 with the code on stdout; 78 (`EX_CONFIG`) with one line
//! on stderr when the input is not a valid module; 1 when it cannot be read
//! or the code cannot be written.
//!
//! A binary of its own because it links cranelift (most of wasmtime's
//! size): the host that starts for every module does not.

// `FINGERPRINT` names the settings in the host's cache key: unused here.
#[allow(dead_code)]
#[path = "../../wasm/src/engine.rs"]
mod engine;

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use wasmtime::Engine;

/// The exit status of a module that is not valid WebAssembly.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next().map(PathBuf::from), args.next()) else {
        eprintln!("usage: polis-wasm-compile NAME < MODULE.wasm > MODULE.cwasm");
        return ExitCode::FAILURE;
    };
    let name = path.display();
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("cannot read {name} from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let engine = match Engine::new(&engine::config()) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot make the engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match engine.precompile_module(&bytes) {
        Ok(code) => code,
        Err(e) => {
            // One line: polis-wasm passes the last line on as the reason.
            let why = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("{name} is not a valid WebAssembly module: {why}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&code).and_then(|()| stdout.flush()) {
        eprintln!("cannot write the compiled code: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
