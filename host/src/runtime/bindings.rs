//! Host-side bindings for the `step-plugin` world in `wit/`.
//!
//! `wasi:http` and `wasi:io` come from wasmtime-wasi(-http); the key-value
//! bucket resource is our own type so the host can scope it to a tenant.

wasmtime::component::bindgen!({
    world: "step-plugin",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:keyvalue/store.bucket": super::kv::BucketHandle,
    },
});
