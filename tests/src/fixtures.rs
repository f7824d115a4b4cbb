//! LINE payloads with their signatures, as LINE sends them (`tests/fixtures/line/`).

/// The channel secret the fixtures are signed with (`SIGNATURES.txt`).
pub const FIXTURE_CHANNEL_SECRET: &str = "0123456789abcdef0123456789abcdef";

/// The exact bytes of a fixture, e.g. `fixture("text.json")`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = crate::binaries::repo_path("tests/fixtures/line").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
