//! Ticket (and caller assertion) verification, as the runner does it, of arbitrary tokens,
//! mutated valid tickets, and tokens validly signed over arbitrary claims or headers.
//!
//! Input: a mode byte, then the token, the edits or the signed bytes. Holds: no panic; a
//! mutated ticket that still verifies carries the original claims; a token is never both a
//! ticket and a caller assertion; a verified ticket has the runner's issuer and audience.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_core::caller::CallerVerifier;
use portcullis_core::ticket::{check_binding, Claims, Signer, Verifier, AUDIENCE};
use portcullis_fuzz as fx;

const HEADER: &[u8] = br#"{"typ":"JWT","alg":"EdDSA"}"#;

struct Fixture {
    tickets: Verifier,
    callers: CallerVerifier,
    claims: Claims,
    ticket: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let public = fx::ticket_public_pem();
        let claims = Claims {
            iss: fx::ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "spiffe://portcullis.local/ns/agents/sa/operator".into(),
            user: Some("alice".into()),
            user_iss: Some(fx::USER_ISSUER.into()),
            groups: vec!["sre".into()],
            session: Some("00".repeat(32)),
            tool: "word_count".into(),
            plan_hash: "sha256:181c3b0dfae9582fa620cf6aecd0b799358923d2809a1db3a6a7df961c3d9b44".into(),
            decision_id: "d".into(),
            require_approval: false,
            placement: None,
            policy_version: "sha256:00".into(),
            jti: "j".into(),
            iat: fx::NOW,
            exp: fx::NOW + 30,
        };
        let signer = Signer::from_pem(fx::ticket_key_pem().as_bytes(), fx::ISSUER.into(), 30).expect("signer");
        Fixture {
            tickets: Verifier::from_pem(public.as_bytes(), fx::ISSUER, fx::TICKET_LEEWAY).expect("verifier"),
            callers: CallerVerifier::from_pem(public.as_bytes(), fx::ISSUER, fx::TICKET_LEEWAY).expect("verifier"),
            ticket: signer.sign(&claims).expect("ticket"),
            claims,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let f = fixture();
    let key = fx::ticket_key();
    let token = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => String::from_utf8_lossy(&fx::mutate(&f.ticket, rest)).into_owned(),
        2 => fx::sign_jws(key, HEADER, rest),
        _ => {
            let payload = f.ticket.split('.').nth(1).and_then(fx::b64url_decode).unwrap_or_default();
            fx::sign_jws(key, rest, &payload)
        }
    };
    let ticket = f.tickets.verify(&token);
    let caller = f.callers.verify(&token);
    assert!(!(ticket.is_ok() && caller.is_ok()), "a token passed as a ticket and as a caller assertion: {token}");
    if let Ok(claims) = ticket {
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (fx::ISSUER, AUDIENCE));
        if mode % 4 == 1 {
            assert_eq!(claims, f.claims, "a mutated ticket verified with other claims: {token}");
        }
        check_binding(&claims, &claims.tool, &claims.plan_hash).expect("a ticket binds its own call");
        assert!(check_binding(&claims, &claims.tool, "sha256:other").is_err());
    }
    if let Ok(claims) = caller {
        assert_eq!(claims.iss, fx::ISSUER);
    }
});
