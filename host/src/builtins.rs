//! The built-in plugins: compiled from `plugins/` by `build.rs` and embedded
//! in the binary, so `weft` needs no plugin files next to it.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The component bytes of the built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
