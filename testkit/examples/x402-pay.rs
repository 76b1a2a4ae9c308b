//! A paying client's part, for trying a gateway by hand: reads a 402's `PAYMENT-REQUIRED`
//! value and prints a `PAYMENT-SIGNATURE` that pays offer N (default 0) with an authorization
//! of the `exact` scheme — the right shape, a fresh nonce, signing nothing, so only a fake
//! facilitator accepts it:
//!
//! ```console
//! $ cargo run -p tollgate-testkit --example x402-pay -- "$OFFERS" [N]
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use tollgate_testkit::{decode_x402, payment_signature, x402_nonce, PAYER};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(offers) = args.next() else {
        eprintln!("usage: x402-pay PAYMENT-REQUIRED-VALUE [OFFER-INDEX]");
        std::process::exit(2);
    };
    let index: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let required = decode_x402(offers.trim());
    let Some(accepted) = required["accepts"].get(index) else {
        eprintln!("the 402 has no offer {index}");
        std::process::exit(1);
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let nonce = x402_nonce(u64::try_from(nanos % u128::from(u64::MAX)).unwrap_or(1));
    println!("{}", payment_signature(accepted, PAYER, &nonce));
}
