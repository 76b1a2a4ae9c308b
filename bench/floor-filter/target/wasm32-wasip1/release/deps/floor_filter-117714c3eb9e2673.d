/work/main/bench/floor-filter/target/wasm32-wasip1/release/deps/floor_filter-117714c3eb9e2673.d: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/bench/floor-filter/target/wasm32-wasip1/release/deps/libfloor_filter-117714c3eb9e2673.rmeta: /work/main/clippy.toml src/lib.rs Cargo.toml

/work/main/clippy.toml:
src/lib.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
