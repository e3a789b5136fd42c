//! The engine's settings, shared by the host (`polis-wasm`, which only
//! loads compiled code) and the compiler (`polis-wasm-compile`, which makes
//! it): both crates include this one file (the compiler by `#[path]`), so
//! the code one writes is code the other accepts.
//!
//! wasmtime checks it again: a compiled module's header carries wasmtime's
//! version and every setting that shapes its code, and `deserialize`
//! refuses a file whose settings differ from the loading engine's.

use wasmtime::Config;

/// What the cache key says of the settings below and of wasmtime. Change
/// it with them (and when wasmtime is upgraded) so that new code gets a new
/// name; an old name is harmless, though: its file fails wasmtime's check,
/// is compiled again and replaced.
pub(crate) const FINGERPRINT: &str = "wasmtime 40; epoch_interruption; no native unwind info";

/// The settings of every engine polis-wasm makes.
pub(crate) fn config() -> Config {
    let mut config = Config::new();
    // The watchdog interrupts a guest that leaves a cancel unread (main.rs).
    config.epoch_interruption(true);
    // No `.eh_frame` for the guest's code: it is only for foreign unwinders
    // (wasmtime's own traps and backtraces walk frame pointers), and loading
    // a module would otherwise register every function's unwind table with
    // libgcc: 12-15 % of a cached start's CPU (BENCHMARKS.md).
    config.native_unwind_info(false);
    config
}
