//! The test kit's fake x402 facilitator on a fixed port, until killed: `POST {base}/verify`,
//! `POST {base}/settle` and `GET {base}/supported`, every payment valid, every nonce settled
//! once (see `testkit/src/fakes/facilitator.rs`). For trying an Envoy configuration that calls
//! a facilitator without a wallet or a chain:
//!
//! ```console
//! $ cargo run -p tollgate-testkit --example fake-facilitator -- --port 10402 --base /x402
//! ```
//!
//! It prints one line per call: method, path, payer, nonce, then the status and JSON answered.

use std::time::Duration;

use tollgate_testkit::Facilitator;

const USAGE: &str =
    "usage: fake-facilitator [--port PORT] [--base PATH]   (defaults 10402 and /x402)";

fn main() {
    let mut port: u16 = 10402;
    let mut base = "/x402".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                port = match args.next().map(|p| p.parse()) {
                    Some(Ok(p)) => p,
                    _ => fail("--port takes a port number"),
                }
            }
            "--base" => {
                base = match args.next() {
                    Some(b) if b.is_empty() || b.starts_with('/') => b,
                    _ => fail("--base takes a path (`/x402`, or `` for none)"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let fake = Facilitator::start_on(port, &base);
    let base = fake.base_path();
    println!(
        "fake x402 facilitator on {} (POST {base}/verify, POST {base}/settle, GET {base}/supported)",
        fake.url()
    );
    let mut printed = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let calls = fake.calls();
        for call in &calls[printed..] {
            println!("{call}");
        }
        printed = calls.len();
    }
}

fn fail(message: &str) -> ! {
    eprintln!("fake-facilitator: {message}\n{USAGE}");
    std::process::exit(2);
}
