use super::*;

fn owner(workload: &str, user: Option<(&str, &str)>) -> Owner {
    Owner { workload: workload.into(), user: user.map(|(i, s)| (i.into(), s.into())) }
}

const INNER: &str = "0b6c9a52-3a3e-4c4e-9d0b-6f3f2f1f7a11";

#[test]
fn a_sealed_id_opens_only_for_its_owner() {
    let sealer = SessionSealer::new([7; 32]);
    let reader = owner("spiffe://td/ns/agents/sa/reader", None);
    let outer = sealer.seal(&reader, INNER).unwrap();
    assert!(outer.starts_with(INNER) && outer.len() > INNER.len() + 20, "{outer}");
    assert!(is_visible_ascii(&outer));
    assert_eq!(sealer.open(&reader, &outer), Ok(INNER));

    for other in [
        owner("spiffe://td/ns/agents/sa/intruder", None),
        owner("spiffe://td/ns/agents/sa/reader", Some(("https://idp", "alice"))),
    ] {
        assert_eq!(sealer.open(&other, &outer), Err(SessionError::Unknown));
    }
    let alice = owner("spiffe://td/ns/agents/sa/operator", Some(("https://idp", "alice")));
    let outer = sealer.seal(&alice, INNER).unwrap();
    assert_eq!(sealer.open(&alice, &outer), Ok(INNER));
    for other in [
        owner("spiffe://td/ns/agents/sa/operator", None),
        owner("spiffe://td/ns/agents/sa/operator", Some(("https://idp", "bob"))),
        owner("spiffe://td/ns/agents/sa/operator", Some(("https://other-idp", "alice"))),
    ] {
        assert_eq!(sealer.open(&other, &outer), Err(SessionError::Unknown));
    }
    // Another key (another deployment) does not open it either.
    assert_eq!(SessionSealer::new([8; 32]).open(&alice, &outer), Err(SessionError::Unknown));
}

#[test]
fn field_boundaries_cannot_be_shifted() {
    let sealer = SessionSealer::new([1; 32]);
    let a = owner("spiffe://a", Some(("b", "c")));
    let b = owner("spiffe://a", Some(("bc", "")));
    assert_ne!(sealer.seal(&a, "s").unwrap(), sealer.seal(&b, "s").unwrap());
}

#[test]
fn raw_tampered_and_malformed_ids_are_unknown() {
    let sealer = SessionSealer::new([7; 32]);
    let reader = owner("spiffe://td/ns/agents/sa/reader", None);
    let outer = sealer.seal(&reader, INNER).unwrap();
    let (_, tag) = outer.rsplit_once('.').unwrap();
    let swapped = format!("1{}.{tag}", &INNER[1..]);
    let mut flipped = outer.clone();
    flipped.pop();
    flipped.push(if outer.ends_with('A') { 'B' } else { 'A' });
    for bad in [INNER, "", ".", "x.", &format!(".{tag}"), &swapped, &flipped, &format!("{outer}.{tag}"), &format!("{INNER}.{}", &tag[..10]), "a b.AAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(sealer.open(&reader, bad), Err(SessionError::Unknown), "{bad:?}");
    }
}

#[test]
fn only_visible_ascii_upstream_ids_are_sealed() {
    let sealer = SessionSealer::new([7; 32]);
    let reader = owner("spiffe://r", None);
    for bad in ["", "a b", "é", "a\u{7f}", &"x".repeat(MAX_SESSION_ID_BYTES + 1)] {
        assert_eq!(sealer.seal(&reader, bad), Err(SessionError::BadUpstreamId), "{bad:?}");
    }
    // An upstream id may itself contain dots: the mac is split off at the last one.
    let outer = sealer.seal(&reader, "a.b").unwrap();
    assert_eq!(sealer.open(&reader, &outer), Ok("a.b"));
}

#[test]
fn session_hash_is_hex_sha256() {
    assert_eq!(session_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
