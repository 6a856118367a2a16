use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: u64 = 1_790_000_000;
const ISS: &str = "https://idp.example";
const JWKS: &str = include_str!("../../tests/data/userjwt/jwks-a.json");

#[derive(Clone, Copy)]
enum Kind {
    Ed,
    Ec,
    Rsa,
}
const KINDS: [Kind; 3] = [Kind::Ed, Kind::Ec, Kind::Rsa];

fn pem(kind: Kind, trusted: bool) -> &'static str {
    match (kind, trusted) {
        (Kind::Ed, true) => include_str!("../../tests/data/userjwt/ed25519-a.pem"),
        (Kind::Ed, false) => include_str!("../../tests/data/userjwt/ed25519-b.pem"),
        (Kind::Ec, true) => include_str!("../../tests/data/userjwt/p256-a.pem"),
        (Kind::Ec, false) => include_str!("../../tests/data/userjwt/p256-b.pem"),
        (Kind::Rsa, true) => include_str!("../../tests/data/userjwt/rsa-a.pem"),
        (Kind::Rsa, false) => include_str!("../../tests/data/userjwt/rsa-b.pem"),
    }
}

fn alg_kid(kind: Kind) -> (Algorithm, &'static str) {
    match kind {
        Kind::Ed => (Algorithm::EdDSA, "ed-a"),
        Kind::Ec => (Algorithm::ES256, "ec-a"),
        Kind::Rsa => (Algorithm::RS256, "rsa-a"),
    }
}

fn encoding_key(kind: Kind, trusted: bool) -> EncodingKey {
    let pem = pem(kind, trusted).as_bytes();
    match kind {
        Kind::Ed => EncodingKey::from_ed_pem(pem),
        Kind::Ec => EncodingKey::from_ec_pem(pem),
        Kind::Rsa => EncodingKey::from_rsa_pem(pem),
    }
    .unwrap()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "portcullis", "sub": "alice", "groups": ["sre", "dev"], "iat": NOW, "exp": NOW + 600})
}

fn token_with(kind: Kind, trusted: bool, kid: Option<&str>, claims: &Value) -> String {
    let (alg, _) = alg_kid(kind);
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &encoding_key(kind, trusted)).unwrap()
}

fn token(kind: Kind, claims: &Value) -> String {
    token_with(kind, true, Some(alg_kid(kind).1), claims)
}

fn config_with(jwks: Value) -> UsersConfig {
    UsersConfig {
        issuers: vec![IssuerConfig { issuer: ISS.into(), audiences: vec!["portcullis".into()], jwks, leeway_seconds: 30 }],
    }
}

fn verifier() -> UserVerifier {
    UserVerifier::new(&config_with(serde_json::from_str(JWKS).unwrap())).unwrap()
}

fn verify(authorization: Option<&str>) -> Result<VerifiedUser, UserError> {
    verifier().verify(authorization, NOW)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn with(claim: &str, value: Value) -> Value {
    let mut c = claims();
    c[claim] = value;
    c
}

fn without(claim: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(claim);
    c
}

#[test]
fn valid_tokens_of_every_key_type_verify() {
    for kind in KINDS {
        let user = verify(Some(&bearer(&token(kind, &claims())))).unwrap();
        assert_eq!(user.sub, "alice");
        assert_eq!(user.iss, ISS);
        assert_eq!(user.groups, ["sre", "dev"]);
        assert_eq!(user.claims["exp"], json!(NOW + 600));
    }
}

#[test]
fn token_without_kid_uses_the_key_that_fits_its_algorithm() {
    for kind in KINDS {
        let t = token_with(kind, true, None, &claims());
        assert_eq!(verify(Some(&bearer(&t))).unwrap().sub, "alice");
    }
}

#[test]
fn missing_and_malformed_headers() {
    assert_eq!(verify(None), Err(UserError::NoToken));
    for bad in ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "token-without-scheme"] {
        assert_eq!(verify(Some(bad)), Err(UserError::MalformedHeader), "{bad:?}");
    }
    for garbage in ["Bearer not-a-jwt", "Bearer a.b", "Bearer a.b.c.d", "Bearer a+b.c.d", "Bearer ...."] {
        assert_eq!(verify(Some(garbage)), Err(UserError::NotJwt), "{garbage:?}");
    }
    assert_eq!(verify(Some("Bearer abc.def.ghi")), Err(UserError::BadHeader));
    let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    assert_eq!(verify(Some(&huge)), Err(UserError::TooLarge));
    // The scheme is case-insensitive.
    assert!(verify(Some(&format!("bearer {}", token(Kind::Ed, &claims())))).is_ok());
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_with_leeway() {
    for kind in KINDS {
        let expired = token(kind, &with("exp", json!(NOW - 31)));
        assert_eq!(verify(Some(&bearer(&expired))), Err(UserError::Expired));
        let within_leeway = token(kind, &with("exp", json!(NOW - 29)));
        assert!(verify(Some(&bearer(&within_leeway))).is_ok());
        let future = token(kind, &with("nbf", json!(NOW + 31)));
        assert_eq!(verify(Some(&bearer(&future))), Err(UserError::NotYetValid));
        let nearly = token(kind, &with("nbf", json!(NOW + 29)));
        assert!(verify(Some(&bearer(&nearly))).is_ok());
    }
}

#[test]
fn exp_is_required_and_must_be_a_number() {
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &without("exp"))))), Err(UserError::NoExpiry));
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &with("exp", json!("tomorrow")))))), Err(UserError::NoExpiry));
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &with("nbf", json!("now")))))), Err(UserError::NotYetValid));
}

#[test]
fn audience_must_match() {
    for kind in KINDS {
        let other = token(kind, &with("aud", json!("someone-else")));
        assert_eq!(verify(Some(&bearer(&other))), Err(UserError::Audience));
        let list = token(kind, &with("aud", json!(["a", "portcullis"])));
        assert!(verify(Some(&bearer(&list))).is_ok());
    }
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &without("aud"))))), Err(UserError::NoAudience));
}

#[test]
fn issuer_must_be_configured() {
    let other = token(Kind::Ed, &with("iss", json!("https://evil.example")));
    assert_eq!(verify(Some(&bearer(&other))), Err(UserError::UnknownIssuer("https://evil.example".into())));
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &without("iss"))))), Err(UserError::NoIssuer));
}

#[test]
fn wrong_key_does_not_verify() {
    for kind in KINDS {
        let (_, kid) = alg_kid(kind);
        let forged = token_with(kind, false, Some(kid), &claims());
        assert_eq!(verify(Some(&bearer(&forged))), Err(UserError::BadSignature));
        let forged = token_with(kind, false, None, &claims());
        assert_eq!(verify(Some(&bearer(&forged))), Err(UserError::BadSignature));
    }
    // A signature checked before the claims: an expired forgery reports the signature.
    let forged = token_with(Kind::Ed, false, Some("ed-a"), &with("exp", json!(NOW - 1000)));
    assert_eq!(verify(Some(&bearer(&forged))), Err(UserError::BadSignature));
}

#[test]
fn tampered_payload_does_not_verify() {
    for kind in KINDS {
        let t = token(kind, &claims());
        let parts: Vec<&str> = t.split('.').collect();
        let other = token(kind, &with("sub", json!("mallory")));
        let other_payload = other.split('.').nth(1).unwrap();
        let spliced = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
        assert_eq!(verify(Some(&bearer(&spliced))), Err(UserError::BadSignature));
    }
}

#[test]
fn unknown_kid_and_algorithm_confusion_are_refused() {
    let t = token_with(Kind::Ed, true, Some("nope"), &claims());
    assert_eq!(verify(Some(&bearer(&t))), Err(UserError::UnknownKey { kid: "nope".into(), issuer: ISS.into() }));
    // An ES256 token naming the Ed25519 key.
    let t = token_with(Kind::Ec, true, Some("ed-a"), &claims());
    assert_eq!(verify(Some(&bearer(&t))), Err(UserError::KeyMismatch { kid: "ed-a".into(), alg: "ES256".into() }));
    // HS256 signed with the RSA public key's bytes (the classic confusion): refused by alg.
    let hs = encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(JWKS.as_bytes())).unwrap();
    assert_eq!(verify(Some(&bearer(&hs))), Err(UserError::Algorithm("HS256".into())));
    // alg "none" (header {"alg":"none","typ":"JWT"}, no signature part content).
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", token(Kind::Ed, &claims()).split('.').nth(1).unwrap());
    assert!(matches!(verify(Some(&bearer(&none))), Err(UserError::BadHeader | UserError::NotJwt)));
    // Other asymmetric algorithms of a configured family are refused too.
    let ps = encode(&Header::new(Algorithm::PS256), &claims(), &encoding_key(Kind::Rsa, true)).unwrap();
    assert_eq!(verify(Some(&bearer(&ps))), Err(UserError::Algorithm("PS256".into())));
}

#[test]
fn issuer_without_a_key_for_the_algorithm() {
    let jwks: Value = serde_json::from_str(JWKS).unwrap();
    let only_ed = json!({"keys": [jwks["keys"][0]]});
    let v = UserVerifier::new(&config_with(only_ed)).unwrap();
    let t = token_with(Kind::Rsa, true, None, &claims());
    assert_eq!(v.verify(Some(&bearer(&t)), NOW), Err(UserError::NoKeyForAlgorithm { issuer: ISS.into(), alg: "RS256".into() }));
}

#[test]
fn subject_and_groups_claims() {
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &without("sub"))))), Err(UserError::NoSubject));
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &with("sub", json!("")))))), Err(UserError::NoSubject));
    assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &without("groups"))))).unwrap().groups, Vec::<String>::new());
    for bad in [json!("sre"), json!(["sre", 1]), json!({"sre": true}), Value::Null] {
        assert_eq!(verify(Some(&bearer(&token(Kind::Ed, &with("groups", bad.clone()))))), Err(UserError::Groups), "{bad}");
    }
}

#[test]
fn no_issuers_configured_means_no_user() {
    let v = UserVerifier::new(&UsersConfig::default()).unwrap();
    let t = token(Kind::Ed, &claims());
    assert_eq!(v.verify(Some(&bearer(&t)), NOW), Err(UserError::UnknownIssuer(ISS.into())));
    assert_eq!(v.verify(None, NOW), Err(UserError::NoToken));
}

#[test]
fn bad_configurations_are_refused() {
    let jwks: Value = serde_json::from_str(JWKS).unwrap();
    let ed = jwks["keys"][0].clone();
    let mut with_d = ed.clone();
    with_d["d"] = json!("AAAA");
    let mut wrong_alg = ed.clone();
    wrong_alg["alg"] = json!("RS256");
    let mut enc_use = ed.clone();
    enc_use["use"] = json!("enc");
    let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"});
    let small_rsa = json!({"kty": "RSA", "n": "AQAB".repeat(40), "e": "AQAB"});
    let cases = [
        (json!({}), "\"keys\" array"),
        (json!({"keys": []}), "no keys"),
        (json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), "private or symmetric"),
        (json!({"keys": [with_d]}), "private or symmetric"),
        (json!({"keys": [{"kty": "XYZ"}]}), "not a supported JWK"),
        (json!({"keys": [p384]}), "unsupported key type or curve"),
        (json!({"keys": [small_rsa]}), "at least 2048"),
        (json!({"keys": [wrong_alg]}), "does not match the key type"),
        (json!({"keys": [enc_use]}), "\"use\" must be \"sig\""),
        (json!({"keys": [ed.clone(), ed.clone()]}), "appears twice"),
    ];
    for (jwks, want) in cases {
        let err = UserVerifier::new(&config_with(jwks.clone())).err().unwrap_or_else(|| panic!("{jwks} accepted"));
        assert!(err.to_string().contains(want), "{jwks}: {err}");
    }
    let good: Value = serde_json::from_str(JWKS).unwrap();
    let mut c = config_with(good.clone());
    c.issuers[0].leeway_seconds = MAX_LEEWAY_SECONDS + 1;
    assert!(UserVerifier::new(&c).err().unwrap().to_string().contains("leeway_seconds"));
    let mut c = config_with(good.clone());
    c.issuers[0].audiences.clear();
    assert!(UserVerifier::new(&c).err().unwrap().to_string().contains("audiences"));
    let mut c = config_with(good);
    c.issuers.push(c.issuers[0].clone());
    assert!(UserVerifier::new(&c).err().unwrap().to_string().contains("configured twice"));
    let unknown = serde_json::from_value::<UsersConfig>(json!({"issuers": [], "allow_anyone": true}));
    assert!(unknown.is_err());
}
