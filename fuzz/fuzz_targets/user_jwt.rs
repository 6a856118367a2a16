//! User-token verification (`Authorization: Bearer`) against the test issuer's JWKS (EdDSA,
//! ES256 and RS256 keys): arbitrary header values, mutated valid tokens, and tokens validly
//! signed over arbitrary claims or headers.
//!
//! Input: a mode byte, then the header value, the edits or the signed bytes (header and
//! payload split at the first NUL). Holds: no panic; a verified user has the trusted issuer, a
//! non-empty subject, an accepted audience and an unexpired token; a mutated token that still
//! verifies names the original user with the original claims.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_core::userjwt::{UserVerifier, UsersConfig, VerifiedUser};
use portcullis_fuzz as fx;
use serde_json::Value;

const HEADER: &[u8] = br#"{"alg":"EdDSA","typ":"JWT","kid":"ed-a"}"#;

struct Fixture {
    verifier: UserVerifier,
    token: String,
    user: VerifiedUser,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let config: UsersConfig = serde_json::from_value(fx::users_config()).expect("users config");
        let verifier = UserVerifier::new(&config).expect("user verifier");
        let token = fx::user_token("alice", &["sre"]);
        let user = verifier.verify(Some(&format!("Bearer {token}")), fx::NOW).expect("the fixture token verifies");
        Fixture { verifier, token, user }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let f = fixture();
    let (head, tail) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (rest.get(..i).unwrap_or_default(), rest.get(i + 1..).unwrap_or_default()),
        None => (rest, &[][..]),
    };
    let payload = || f.token.split('.').nth(1).and_then(fx::b64url_decode).unwrap_or_default();
    let authorization = match mode % 5 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => format!("Bearer {}", String::from_utf8_lossy(&fx::mutate(&f.token, rest))),
        2 => format!("Bearer {}", fx::sign_jws(fx::user_key(), HEADER, rest)),
        3 => format!("Bearer {}", fx::sign_jws(fx::user_key(), rest, &payload())),
        _ => format!("Bearer {}", fx::sign_jws(fx::user_key(), head, tail)),
    };
    let Ok(user) = f.verifier.verify(Some(&authorization), fx::NOW) else { return };
    assert_eq!(user.iss, fx::USER_ISSUER);
    assert!(!user.sub.is_empty());
    assert_eq!(user.claims.get("sub").and_then(Value::as_str), Some(user.sub.as_str()));
    let exp = user.claims.get("exp").and_then(Value::as_f64).expect("a verified token has an exp");
    assert!(exp + 30.0 > fx::NOW as f64, "expired token accepted: {authorization}");
    let audiences = match user.claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        other => panic!("verified without an audience: {other:?}"),
    };
    assert!(audiences.iter().any(|a| a == fx::USER_AUDIENCE));
    if mode % 5 == 1 {
        assert_eq!(user, f.user, "a mutated token verified as someone else: {authorization}");
    }
});
