/work/main/bench/floor-filter/target/wasm32-wasip1/release/deps/equivalent-41600081cd17077c.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs

/work/main/bench/floor-filter/target/wasm32-wasip1/release/deps/libequivalent-41600081cd17077c.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs:
