//! The recorded LINE webhook bodies of `tests/fixtures/line/` (the repository's copy of the
//! reference fixtures) verify under the signatures listed in their `SIGNATURES.txt`.

use std::{fs, path::PathBuf};

use hookplane_verify::{Error, line};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/line")
}

struct Signatures {
    channel_secret: String,
    files: Vec<(String, String)>,
    vector: String,
}

fn signatures() -> Signatures {
    let text = fs::read_to_string(fixture_dir().join("SIGNATURES.txt")).unwrap();
    let mut channel_secret = None;
    let mut vector = None;
    let mut files = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(secret) = line.strip_prefix("channel_secret:") {
            channel_secret = Some(secret.trim().to_owned());
            continue;
        }
        let mut fields = line.split_whitespace();
        let (name, signature) = (fields.next().unwrap(), fields.next().unwrap());
        if name == "vector" {
            vector = Some(signature.to_owned());
        } else {
            files.push((name.to_owned(), signature.to_owned()));
        }
    }
    Signatures {
        channel_secret: channel_secret.unwrap(),
        files,
        vector: vector.unwrap(),
    }
}

#[test]
fn every_fixture_file_is_listed() {
    assert_eq!(signatures().files.len(), 4);
}

#[test]
fn sign_reproduces_every_fixture_signature() {
    let sigs = signatures();
    for (name, expected) in &sigs.files {
        let body = fs::read(fixture_dir().join(name)).unwrap();
        assert_eq!(
            &line::sign(sigs.channel_secret.as_bytes(), &body),
            expected,
            "{name}"
        );
    }
}

#[test]
fn verify_accepts_every_fixture_with_its_signature() {
    let sigs = signatures();
    for (name, signature) in &sigs.files {
        let body = fs::read(fixture_dir().join(name)).unwrap();
        assert_eq!(
            line::verify(sigs.channel_secret.as_bytes(), &body, signature),
            Ok(()),
            "{name}"
        );
    }
}

#[test]
fn verify_rejects_each_fixture_under_another_fixtures_signature() {
    let sigs = signatures();
    let (first, _) = &sigs.files[0];
    let body = fs::read(fixture_dir().join(first)).unwrap();
    for (name, signature) in sigs.files.iter().skip(1) {
        assert_eq!(
            line::verify(sigs.channel_secret.as_bytes(), &body, signature),
            Err(Error::SignatureMismatch),
            "{first} under the signature of {name}"
        );
    }
}

#[test]
fn verify_rejects_a_fixture_with_a_trailing_newline_added() {
    let sigs = signatures();
    let (name, signature) = &sigs.files[0];
    let mut body = fs::read(fixture_dir().join(name)).unwrap();
    body.push(b'\n');
    assert_eq!(
        line::verify(sigs.channel_secret.as_bytes(), &body, signature),
        Err(Error::SignatureMismatch)
    );
}

#[test]
fn the_sdk_vector_is_the_one_in_the_fixture_list() {
    assert_eq!(
        line::sign(b"test_secret", br#"{"hello":"world"}"#),
        signatures().vector
    );
}
