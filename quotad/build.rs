//! tonic's service glue for fleet mode's payments API (`tollgate.payments.v1.Payments`), made
//! by tonic-build's manual builder over the messages the filter declares (src/paywire.rs): no
//! .proto file and no protobuf compiler. The server and a client (tests) are generated into
//! OUT_DIR and included by src/payments.rs.

use tonic_build::manual::{Builder, Method, Service};

fn method(name: &str, route: &str, message: &str) -> Method {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("tollgate::paywire::{message}Request"))
        .output_type(format!("tollgate::paywire::{message}Response"))
        .codec_path("tonic_prost::ProstCodec")
        .build()
}

fn main() {
    let service = Service::builder()
        .name("Payments")
        .package("tollgate.payments.v1")
        .method(method("claim", "Claim", "Claim"))
        .method(method("mark", "Mark", "Mark"))
        .method(method("credit", "Credit", "Credit"))
        .method(method("draw", "Draw", "Draw"))
        .method(method("balance", "Balance", "Balance"))
        .build();
    Builder::new().compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}
