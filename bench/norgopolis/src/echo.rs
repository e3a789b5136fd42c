//! `echo`, a Norgopolis module on `norgopolis-module` 2.0.3: the peer of
//! polis's `echo` module in `polis-bench`.
//!
//! norgopolis-server 0.1.4 finds a module by running the executable named
//! after it, with `PATH` set to its module directory (`--path`, else
//! `$XDG_DATA_HOME/norgopolis/modules`), so `polis-bench` copies this binary
//! there as `echo`. The server then speaks gRPC with it over its stdin and
//! stdout.
//!
//! `echo` answers with its argument's MessagePack bytes, unchanged, as one
//! item. (polis's echo parses and re-serializes its JSON, slightly more work.)

use norgopolis_module::{invoker_service::Service, module_communication::MessagePack, Code, Module, Status};
use tokio_stream::wrappers::UnboundedReceiverStream;

struct Echo;

#[norgopolis_module::async_trait]
impl Service for Echo {
    type Stream = UnboundedReceiverStream<Result<MessagePack, Status>>;

    async fn call(&self, function: String, args: Option<MessagePack>) -> Result<Self::Stream, Status> {
        match function.as_str() {
            "echo" => {
                // The library's recommended shape: a channel holding the items.
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let data = args.map(|a| a.data).unwrap_or_default();
                let _ = tx.send(Ok(MessagePack { data }));
                Ok(UnboundedReceiverStream::new(rx))
            }
            other => Err(Status::new(Code::NotFound, format!("echo has no function {other:?}"))),
        }
    }
}

// The library's documented setup is `#[tokio::main]`; a current-thread
// runtime is what polis's echo uses, so both modules run the same way.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = Module::new().start(Echo).await {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
