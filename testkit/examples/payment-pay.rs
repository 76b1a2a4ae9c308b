//! A paying client's part of the HTTP Payment scheme, for trying a gateway by hand: reads one
//! `WWW-Authenticate: Payment` challenge of a 402 and prints the `Authorization` value that
//! pays it: an `evm` charge credential whose EIP-3009 authorization carries the challenge's
//! nonce (keccak-256 of its id and realm) and signs nothing, so only a fake facilitator
//! accepts it:
//!
//! ```console
//! $ cargo run -p tollgate-testkit --example payment-pay -- "$CHALLENGE"
//! ```

use tollgate_testkit::{parse_challenge, pay_challenge, PAYER};

fn main() {
    let Some(challenge) = std::env::args().nth(1) else {
        eprintln!("usage: payment-pay 'Payment id=\"...\", realm=\"...\", ...'");
        std::process::exit(2);
    };
    let challenge = parse_challenge(challenge.trim());
    println!("{}", pay_challenge(&challenge, PAYER));
}
