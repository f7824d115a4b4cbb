//! The signature verifiers of `hookplane-verify` (LINE, MAAC, Standard Webhooks) on any secret,
//! header, id, timestamp and body. They must never panic, always accept their own signature,
//! and reject it once one bit of the body or of the signature changes.
//!
//! Input: a body starting with `{` (the LINE fixtures are the seeds) is checked under the
//! fixtures' secret. Anything else is `<secret>\n<msg id>\n<timestamp>\n<signature header>\n<body>`.

#![no_main]

use hookplane_verify::{line, maac, standard};
use libfuzzer_sys::fuzz_target;

/// The fixtures' channel secret (`tests/fixtures/line/SIGNATURES.txt`).
const FIXTURE_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// The Standard Webhooks specification's example secret.
const STANDARD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

struct Case<'a> {
    secret: &'a [u8],
    msg_id: String,
    timestamp: String,
    header: String,
    body: &'a [u8],
}

fn case(data: &[u8]) -> Case<'_> {
    if data.first() == Some(&b'{') {
        return Case {
            secret: FIXTURE_SECRET,
            msg_id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".to_owned(),
            timestamp: "1649367553".to_owned(),
            header: line::sign(FIXTURE_SECRET, data),
            body: data,
        };
    }
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let mut next = || parts.next().unwrap_or_default();
    let secret = next();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let msg_id = text(next());
    let timestamp = text(next());
    let header = text(next());
    Case {
        secret,
        msg_id,
        timestamp,
        header,
        body: next(),
    }
}

/// The same bytes with one bit flipped, chosen by the input.
fn flipped(bytes: &[u8], seed: usize) -> Option<Vec<u8>> {
    if bytes.is_empty() {
        return None;
    }
    let mut changed = bytes.to_vec();
    let at = seed % changed.len();
    changed[at] ^= 1 << (seed % 8);
    Some(changed)
}

fn check_hmac_scheme(
    sign: fn(&[u8], &[u8]) -> String,
    verify: fn(&[u8], &[u8], &str) -> Result<(), hookplane_verify::Error>,
    c: &Case<'_>,
) {
    // Whatever the header, no panic.
    let _ = verify(c.secret, c.body, &c.header);
    let own = sign(c.secret, c.body);
    assert_eq!(verify(c.secret, c.body, &own), Ok(()), "its own signature");
    let padded = format!(" {own}\r\n");
    assert_eq!(
        verify(c.secret, c.body, &padded),
        Ok(()),
        "surrounding whitespace"
    );
    if let Some(body) = flipped(c.body, c.header.len()) {
        assert!(
            verify(c.secret, &body, &own).is_err(),
            "a changed body passed"
        );
    }
    if let Some(other) = flipped(c.secret, c.body.len())
        && sign(&other, c.body) != own
    {
        assert!(
            verify(&other, c.body, &own).is_err(),
            "another secret passed"
        );
    }
}

fn check_standard(c: &Case<'_>) {
    let given = standard::Secret::parse(&String::from_utf8_lossy(c.secret));
    let secret = match (given, standard::Secret::from_bytes(c.secret)) {
        (Ok(s), _) | (_, Ok(s)) => s,
        _ => standard::Secret::parse(STANDARD_SECRET).expect("the spec's secret parses"),
    };
    let secrets = [secret.clone()];
    let now = c.timestamp.trim().parse::<i64>().unwrap_or(1_649_367_553);
    // Whatever the headers and the clock, no panic.
    for clock in [now, i64::MIN, i64::MAX] {
        let _ = standard::verify(&secrets, &c.msg_id, &c.timestamp, &c.header, c.body, clock);
    }

    let own = standard::sign(&secret, &c.msg_id, now, c.body);
    let ts = now.to_string();
    assert_eq!(
        standard::verify(&secrets, &c.msg_id, &ts, &own, c.body, now),
        Ok(()),
        "its own signature"
    );
    // Among other entries, as a rotation sends it.
    let several = format!("v2,abc {} {own}", c.header.replace(char::is_whitespace, ""));
    assert_eq!(
        standard::verify(&secrets, &c.msg_id, &ts, &several, c.body, now),
        Ok(()),
        "one matching entry among several"
    );
    if let Some(body) = flipped(c.body, c.header.len()) {
        assert!(
            standard::verify(&secrets, &c.msg_id, &ts, &own, &body, now).is_err(),
            "a changed body passed"
        );
    }
    let other_id = format!("{}x", c.msg_id);
    assert!(
        standard::verify(&secrets, &other_id, &ts, &own, c.body, now).is_err(),
        "another message id passed"
    );
    assert_eq!(
        standard::Secret::parse(&secret.to_whsec_string())
            .expect("its own string form parses")
            .as_bytes(),
        secret.as_bytes()
    );
}

fuzz_target!(|data: &[u8]| {
    let c = case(data);
    check_hmac_scheme(line::sign, line::verify, &c);
    check_hmac_scheme(maac::sign, maac::verify, &c);
    check_standard(&c);
});
