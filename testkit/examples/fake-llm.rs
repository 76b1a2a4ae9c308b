//! The test kit's fake LLM provider on a fixed port, until killed: OpenAI's
//! `/v1/chat/completions` and `/v1/responses`, Anthropic's `/v1/messages`, answering with the
//! usage the `x-fake-*` request headers ask for (see `testkit/src/fakes/llm.rs`). For trying an
//! Envoy configuration without a provider account:
//!
//! ```console
//! $ cargo run -p tollgate-testkit --example fake-llm -- --port 10401
//! ```
//!
//! It prints one line per request: method, path, model, output cap and whether it streams.

use std::time::Duration;

use tollgate_testkit::FakeLlm;

const USAGE: &str = "usage: fake-llm [--port PORT]   (default 10401)";

fn main() {
    let mut port: u16 = 10401;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                port = match args.next().map(|p| p.parse()) {
                    Some(Ok(p)) => p,
                    _ => fail("--port takes a port number"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let fake = FakeLlm::start_on(port);
    println!("fake LLM on http://127.0.0.1:{}", fake.port);
    let mut printed = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let requests = fake.requests();
        for request in &requests[printed..] {
            println!("{request}");
        }
        printed = requests.len();
    }
}

fn fail(message: &str) -> ! {
    eprintln!("fake-llm: {message}\n{USAGE}");
    std::process::exit(2);
}
