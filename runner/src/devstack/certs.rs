//! Dev PKI for the one-machine setup: a throwaway CA, SPIFFE X.509-SVIDs for the gateway
//! (Envoy), the runner and each agent, and the Ed25519 key pair the gateway signs tickets with.
//!
//! Layout of the directory (0700; private keys 0600):
//!
//! ```text
//! ca.pem, ca-key.pem                     dev CA (ECDSA P-256), the trust bundle of the domain
//! gateway.pem, gateway-key.pem           spiffe://<td>/ns/portcullis/sa/gateway, server+client auth
//! runner.pem, runner-key.pem             spiffe://<td>/ns/portcullis/sa/runner, server+client auth
//! agents/<name>.pem, <name>-key.pem      spiffe://<td>/ns/agents/sa/<name>, client auth only
//! agents/<name>-bundle.pem               key + cert in one file (e.g. reqwest::Identity::from_pem)
//! ticket-signing-key.pem                 Ed25519 PKCS#8 private key ("BEGIN PRIVATE KEY")
//! ticket-signing-pub.pem                 Ed25519 SPKI public key ("BEGIN PUBLIC KEY")
//! users/idp.key.pem, users/jwks.json     dev user-token issuer (see crate::devstack::users)
//! runner-signing-key.pem                 the runner's Ed25519 PKCS#8 key (audit checkpoints)
//! runner-signing-key.pub.pem             its SPKI public key, for `portcullis audit verify`
//! ```
//!
//! [`ensure`] is idempotent: a complete, consistent, unexpired set is reused byte for byte, and
//! agents missing from it are issued by the existing CA. Anything else (a partial set, a cert
//! from another CA or trust domain, an expiring cert) regenerates everything, with a warning,
//! because half of an old PKI next to half of a new one fails later in confusing TLS errors.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// The trust domain of the one-machine setup (and of `envoy/envoy.yaml`).
pub const DEFAULT_TRUST_DOMAIN: &str = "portcullis.local";

const VALIDITY: Duration = Duration::days(365);
/// Not-before is set this far in the past to tolerate small clock differences.
const BACKDATE: Duration = Duration::minutes(5);
/// Existing certificates that expire within this window are replaced.
const RENEW_BEFORE: Duration = Duration::days(1);

/// Mode of public files (certificates, public keys).
pub const CERT_MODE: u32 = 0o644;
/// Mode of every file that holds a secret.
pub const KEY_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// The SPIFFE ID `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An agent's client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub name: String,
    pub spiffe_id: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Private key followed by the certificate, in one PEM file.
    pub bundle: PathBuf,
}

/// Paths of a complete dev PKI. Every path is absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    pub dir: PathBuf,
    pub trust_domain: String,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub gateway: CertPair,
    pub runner: CertPair,
    pub agents: Vec<AgentIdentity>,
    pub ticket_signing_key: PathBuf,
    pub ticket_public_key: PathBuf,
    /// The dev issuer of user tokens.
    pub user_issuer: crate::devstack::users::DevIssuer,
    /// The runner's own Ed25519 key (PKCS#8, 0600): it signs the audit checkpoints.
    pub runner_signing_key: PathBuf,
    /// Its public key (SPKI PEM), for verifiers.
    pub runner_public_key: PathBuf,
}

impl DevPki {
    pub fn gateway_spiffe_id(&self) -> String {
        spiffe_id(&self.trust_domain, "portcullis", "gateway")
    }

    pub fn runner_spiffe_id(&self) -> String {
        spiffe_id(&self.trust_domain, "portcullis", "runner")
    }

    pub fn agent(&self, name: &str) -> Option<&AgentIdentity> {
        self.agents.iter().find(|a| a.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid trust domain {0:?}: use 1-255 lowercase letters, digits, '.', '-' or '_'")]
    InvalidTrustDomain(String),
    #[error(
        "invalid agent name {0:?}: use 1-128 letters, digits, '.', '-' or '_', not '.' or '..', \
         not ending in '-key' or '-bundle'"
    )]
    InvalidAgentName(String),
    #[error("agent name {0:?} is listed twice")]
    DuplicateAgent(String),
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot generate {what}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot load the existing dev CA from {}", path.display())]
    LoadCa {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("the crypto backend returned an unexpected Ed25519 PKCS#8 encoding")]
    Ed25519Encoding,
}

/// Loads the dev PKI in `dir`, generating whatever is missing (see the module docs).
pub fn ensure(dir: &Path, trust_domain: &str, agents: &[&str]) -> Result<DevPki, CertsError> {
    validate_trust_domain(trust_domain)?;
    for (i, name) in agents.iter().enumerate() {
        validate_agent_name(name)?;
        if agents[..i].contains(name) {
            return Err(CertsError::DuplicateAgent((*name).to_owned()));
        }
    }
    let dir = std::path::absolute(dir).map_err(io_err("resolve", dir))?;
    let layout = Layout::new(&dir, trust_domain);
    prepare_dir(&layout.dir)?;
    // Concurrent callers (parallel tests, `portcullis up` next to a script) would otherwise
    // interleave two generations into one mismatched set. Held until this function returns.
    let _lock = lock_dir(&layout.dir)?;
    prepare_dir(&layout.agents_dir)?;

    let now = OffsetDateTime::now_utc();
    let core = layout.core_files();
    let missing: Vec<&Path> = core.iter().copied().filter(|p| !p.exists()).collect();
    let existing = if missing.is_empty() {
        match check_core(&layout, now)? {
            Check::Usable(ca) => Some(ca),
            Check::Stale(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "dev PKI unusable; regenerating all of it");
                None
            }
        }
    } else if missing.len() == core.len() {
        tracing::info!(dir = %dir.display(), %trust_domain, "generating dev PKI");
        None
    } else {
        let missing: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(dir = %dir.display(), ?missing, "dev PKI incomplete; regenerating all of it");
        None
    };

    let (ca, regenerated) = match existing {
        Some(ca) => (ca, false),
        None => (generate_core(&layout, now)?, true),
    };

    let mut identities = Vec::with_capacity(agents.len());
    for name in agents {
        let id = layout.agent(name);
        let reissue = if regenerated {
            true
        } else {
            match check_agent(&id, &ca, now)? {
                Check::Usable(()) => false,
                Check::Stale(reason) => {
                    if [&id.cert, &id.key, &id.bundle].iter().any(|p| p.exists()) {
                        tracing::warn!(agent = %name, %reason, "reissuing agent certificate");
                    } else {
                        tracing::info!(agent = %name, spiffe_id = %id.spiffe_id, "issuing agent certificate");
                    }
                    true
                }
            }
        };
        if reissue {
            issue_agent(&id, trust_domain, &ca, now)?;
        }
        identities.push(id);
    }
    let user_issuer = crate::devstack::users::ensure(&layout.dir)?;
    let (runner_signing_key, runner_public_key) = ensure_runner_signing_key(&layout.dir)?;

    Ok(DevPki {
        dir: layout.dir,
        trust_domain: trust_domain.to_owned(),
        ca_cert: layout.ca_cert,
        ca_key: layout.ca_key,
        gateway: layout.gateway,
        runner: layout.runner,
        agents: identities,
        ticket_signing_key: layout.ticket_key,
        ticket_public_key: layout.ticket_pub,
        user_issuer,
        runner_signing_key,
        runner_public_key,
    })
}

/// File name of the runner's signing key in the certificates directory.
pub const RUNNER_SIGNING_KEY: &str = "runner-signing-key.pem";
/// File name of its public key.
pub const RUNNER_SIGNING_PUB: &str = "runner-signing-key.pub.pem";

/// Creates the runner's Ed25519 signing key pair in `dir` unless a usable one is there (kept
/// apart from the core set: adding it to an existing PKI regenerates nothing else). The public
/// key is always rewritten from the private key, so the two never disagree.
pub fn ensure_runner_signing_key(dir: &Path) -> Result<(PathBuf, PathBuf), CertsError> {
    let key_path = dir.join(RUNNER_SIGNING_KEY);
    let pub_path = dir.join(RUNNER_SIGNING_PUB);
    let existing = match key_path.exists().then(|| load_key(&key_path)).transpose()? {
        Some(Check::Usable(k)) if k.algorithm() == &PKCS_ED25519 => Some(k),
        _ => None,
    };
    let key = match existing {
        Some(k) => k,
        None => {
            if key_path.exists() {
                tracing::warn!(key = %key_path.display(), "the runner signing key is not a usable Ed25519 key; replacing it");
            }
            let (pem, _) = ed25519_pkcs8_v1()?;
            write_file(&key_path, &pem, KEY_MODE)?;
            KeyPair::from_pem(&pem).map_err(gen_err("runner signing key"))?
        }
    };
    let public = key.public_key_pem();
    if read(&pub_path).ok().as_deref() != Some(public.as_str()) {
        write_file(&pub_path, &public, CERT_MODE)?;
    }
    Ok((key_path, pub_path))
}

struct Layout {
    dir: PathBuf,
    agents_dir: PathBuf,
    trust_domain: String,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    gateway: CertPair,
    runner: CertPair,
    ticket_key: PathBuf,
    ticket_pub: PathBuf,
}

impl Layout {
    fn new(dir: &Path, trust_domain: &str) -> Self {
        let pair = |name: &str| CertPair {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        Self {
            dir: dir.to_owned(),
            agents_dir: dir.join("agents"),
            trust_domain: trust_domain.to_owned(),
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            gateway: pair("gateway"),
            runner: pair("runner"),
            ticket_key: dir.join("ticket-signing-key.pem"),
            ticket_pub: dir.join("ticket-signing-pub.pem"),
        }
    }

    fn core_files(&self) -> [&Path; 8] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.gateway.cert,
            &self.gateway.key,
            &self.runner.cert,
            &self.runner.key,
            &self.ticket_key,
            &self.ticket_pub,
        ]
    }

    fn agent(&self, name: &str) -> AgentIdentity {
        AgentIdentity {
            name: name.to_owned(),
            spiffe_id: spiffe_id(&self.trust_domain, "agents", name),
            cert: self.agents_dir.join(format!("{name}.pem")),
            key: self.agents_dir.join(format!("{name}-key.pem")),
            bundle: self.agents_dir.join(format!("{name}-bundle.pem")),
        }
    }
}

/// The CA that signs leaves: its signing state plus its DER, to check existing leaves against.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
}

enum Check<T> {
    Usable(T),
    /// Present but not fit for use, and why.
    Stale(String),
}

macro_rules! usable {
    ($check:expr) => {
        match $check {
            Check::Usable(v) => v,
            Check::Stale(reason) => return Ok(Check::Stale(reason)),
        }
    };
}

fn check_core(l: &Layout, now: OffsetDateTime) -> Result<Check<Ca>, CertsError> {
    let ca_pem = read(&l.ca_cert)?;
    let ca_der = usable!(pem_to_der(&l.ca_cert, &ca_pem));
    let ca_key = usable!(load_key(&l.ca_key)?);
    {
        let ca = usable!(parse_cert(&l.ca_cert, &ca_der));
        if !ca.is_ca() {
            return Ok(Check::Stale(format!(
                "{} is not a CA certificate",
                l.ca_cert.display()
            )));
        }
        usable!(check_validity(&l.ca_cert, &ca, now));
        usable!(check_key_matches(&l.ca_key, &ca, &ca_key));
        for (pair, sa) in [(&l.gateway, "gateway"), (&l.runner, "runner")] {
            let want = spiffe_id(&l.trust_domain, "portcullis", sa);
            usable!(check_leaf(&pair.cert, &pair.key, &ca, &want, now)?);
        }
    }
    let ticket_key = usable!(load_key(&l.ticket_key)?);
    if ticket_key.algorithm() != &PKCS_ED25519 {
        return Ok(Check::Stale(format!(
            "{} is not an Ed25519 key",
            l.ticket_key.display()
        )));
    }
    if read(&l.ticket_pub)?.trim() != ticket_key.public_key_pem().trim() {
        return Ok(Check::Stale(format!(
            "{} does not match {}",
            l.ticket_pub.display(),
            l.ticket_key.display()
        )));
    }
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|source| CertsError::LoadCa {
            path: l.ca_cert.clone(),
            source,
        })?;
    Ok(Check::Usable(Ca {
        issuer,
        cert_der: ca_der,
    }))
}

fn check_agent(id: &AgentIdentity, ca: &Ca, now: OffsetDateTime) -> Result<Check<()>, CertsError> {
    for p in [&id.cert, &id.key, &id.bundle] {
        if !p.exists() {
            return Ok(Check::Stale(format!("{} is missing", p.display())));
        }
    }
    let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(&ca.cert_der) else {
        return Ok(Check::Stale("CA certificate does not parse".to_owned()));
    };
    usable!(check_leaf(&id.cert, &id.key, &ca_cert, &id.spiffe_id, now)?);
    let expected_bundle = format!("{}{}", read(&id.key)?, read(&id.cert)?);
    if read(&id.bundle)? != expected_bundle {
        return Ok(Check::Stale(format!(
            "{} is not key + cert",
            id.bundle.display()
        )));
    }
    Ok(Check::Usable(()))
}

/// A leaf is usable if it parses, was signed by `ca`, carries exactly the expected SPIFFE ID,
/// is valid for a while yet, and its key file holds its key.
fn check_leaf(
    cert_path: &Path,
    key_path: &Path,
    ca: &X509Certificate<'_>,
    want_spiffe_id: &str,
    now: OffsetDateTime,
) -> Result<Check<()>, CertsError> {
    let der = usable!(pem_to_der(cert_path, &read(cert_path)?));
    let cert = usable!(parse_cert(cert_path, &der));
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Ok(Check::Stale(format!(
            "{} was not signed by the dev CA",
            cert_path.display()
        )));
    }
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if uris != [want_spiffe_id] {
        return Ok(Check::Stale(format!(
            "{} has URI SANs {uris:?}, want [{want_spiffe_id:?}]",
            cert_path.display()
        )));
    }
    usable!(check_validity(cert_path, &cert, now));
    let key = usable!(load_key(key_path)?);
    usable!(check_key_matches(key_path, &cert, &key));
    Ok(Check::Usable(()))
}

fn check_validity(path: &Path, cert: &X509Certificate<'_>, now: OffsetDateTime) -> Check<()> {
    let v = cert.validity();
    if v.not_before.timestamp() > now.unix_timestamp() {
        return Check::Stale(format!("{} is not valid yet", path.display()));
    }
    if v.not_after.timestamp() < (now + RENEW_BEFORE).unix_timestamp() {
        return Check::Stale(format!("{} expires within {RENEW_BEFORE}", path.display()));
    }
    Check::Usable(())
}

fn check_key_matches(key_path: &Path, cert: &X509Certificate<'_>, key: &KeyPair) -> Check<()> {
    if cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw() {
        Check::Usable(())
    } else {
        Check::Stale(format!(
            "{} does not match its certificate",
            key_path.display()
        ))
    }
}

fn pem_to_der(path: &Path, pem: &str) -> Check<Vec<u8>> {
    match x509_parser::pem::parse_x509_pem(pem.as_bytes()) {
        Ok((_, p)) if p.label == "CERTIFICATE" => Check::Usable(p.contents),
        _ => Check::Stale(format!("{} is not a PEM certificate", path.display())),
    }
}

fn parse_cert<'a>(path: &Path, der: &'a [u8]) -> Check<X509Certificate<'a>> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => Check::Usable(cert),
        Err(e) => Check::Stale(format!("{} does not parse: {e}", path.display())),
    }
}

fn load_key(path: &Path) -> Result<Check<KeyPair>, CertsError> {
    let pem = read(path)?;
    Ok(match KeyPair::from_pem(&pem) {
        Ok(k) => Check::Usable(k),
        Err(e) => Check::Stale(format!(
            "{} is not a usable private key: {e}",
            path.display()
        )),
    })
}

/// Generates and writes the CA, the gateway and runner SVIDs and the ticket key pair.
fn generate_core(l: &Layout, now: OffsetDateTime) -> Result<Ca, CertsError> {
    let ca_key = new_key("dev CA key", &PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name("Portcullis dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params, now);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(gen_err("dev CA certificate"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = Ca {
        issuer: Issuer::new(ca_params, ca_key),
        cert_der: ca_cert.der().to_vec(),
    };

    let both = [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let local = [
        SanType::DnsName(ia5("localhost")?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    let gateway = issue_leaf(
        &ca,
        "gateway",
        &l.trust_domain,
        "portcullis",
        &local,
        &both,
        now,
    )?;
    let runner = issue_leaf(
        &ca,
        "runner",
        &l.trust_domain,
        "portcullis",
        &local,
        &both,
        now,
    )?;
    let (ticket_key, ticket_pub) = ed25519_pkcs8_v1()?;

    // Keys before the certificates that name them, the CA last: an interrupted run leaves
    // a set that the next run recognizes as incomplete.
    write_file(&l.gateway.key, &gateway.key_pem, KEY_MODE)?;
    write_file(&l.gateway.cert, &gateway.cert_pem, CERT_MODE)?;
    write_file(&l.runner.key, &runner.key_pem, KEY_MODE)?;
    write_file(&l.runner.cert, &runner.cert_pem, CERT_MODE)?;
    write_file(&l.ticket_key, &ticket_key, KEY_MODE)?;
    write_file(&l.ticket_pub, &ticket_pub, CERT_MODE)?;
    write_file(&l.ca_key, &ca_key_pem, KEY_MODE)?;
    write_file(&l.ca_cert, ca_cert.pem(), CERT_MODE)?;
    Ok(ca)
}

fn issue_agent(
    id: &AgentIdentity,
    trust_domain: &str,
    ca: &Ca,
    now: OffsetDateTime,
) -> Result<(), CertsError> {
    let client = [ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = issue_leaf(ca, &id.name, trust_domain, "agents", &[], &client, now)?;
    write_file(&id.key, &leaf.key_pem, KEY_MODE)?;
    write_file(&id.cert, &leaf.cert_pem, CERT_MODE)?;
    write_file(
        &id.bundle,
        format!("{}{}", leaf.key_pem, leaf.cert_pem),
        KEY_MODE,
    )
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

/// An X.509-SVID: exactly one URI SAN (the SPIFFE ID), not a CA, digitalSignature only.
fn issue_leaf(
    ca: &Ca,
    name: &str,
    trust_domain: &str,
    namespace: &str,
    extra_sans: &[SanType],
    ekus: &[ExtendedKeyUsagePurpose],
    now: OffsetDateTime,
) -> Result<Leaf, CertsError> {
    let id = spiffe_id(trust_domain, namespace, name);
    let key = new_key(&format!("key for {id}"), &PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.subject_alt_names = std::iter::once(SanType::URI(ia5(&id)?))
        .chain(extra_sans.iter().cloned())
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus.to_vec();
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(gen_err(format!("certificate for {id}")))?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// An Ed25519 key pair as (PKCS#8 v1 private key PEM, SPKI public key PEM).
///
/// ring emits PKCS#8 v2 (with the public key embedded), which OpenSSL 3 refuses to read;
/// v1 is what every tool accepts, and jsonwebtoken's `from_ed_pem` takes either.
pub(crate) fn ed25519_pkcs8_v1() -> Result<(String, String), CertsError> {
    // RFC 8410: SEQUENCE { INTEGER version, AlgorithmIdentifier { id-Ed25519 },
    // OCTET STRING { OCTET STRING seed(32) } [, [1] publicKey] }. Both versions share the
    // layout up to and including the seed; only the outer length and version differ.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const V2_PREFIX: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let generated = new_key("ticket signing key", &PKCS_ED25519)?;
    let der = generated.serialized_der();
    let seed = match (der.get(..16), der.get(16..48)) {
        (Some(prefix), Some(seed)) if prefix == V1_PREFIX || prefix == V2_PREFIX => seed,
        _ => return Err(CertsError::Ed25519Encoding),
    };
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    let key = KeyPair::try_from(v1).map_err(gen_err("ticket signing key (PKCS#8 v1)"))?;
    if key.public_key_raw() != generated.public_key_raw() {
        return Err(CertsError::Ed25519Encoding);
    }
    Ok((key.serialize_pem(), key.public_key_pem()))
}

fn new_key(what: &str, alg: &'static rcgen::SignatureAlgorithm) -> Result<KeyPair, CertsError> {
    KeyPair::generate_for(alg).map_err(gen_err(what))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Portcullis dev");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, now: OffsetDateTime) {
    params.not_before = now - BACKDATE;
    params.not_after = now + VALIDITY;
}

fn ia5(s: &str) -> Result<Ia5String, CertsError> {
    Ia5String::try_from(s).map_err(gen_err(format!("name {s:?}")))
}

fn gen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertsError {
    let what = what.into();
    move |source| CertsError::Generate { what, source }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CertsError + 'a {
    move |source| CertsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn read(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(io_err("read", path))
}

/// Creates `dir` (0700 from the start, as are any parents it creates), or tightens an existing
/// one that others can read (before anything secret is written into it).
pub fn prepare_dir(dir: &Path) -> Result<(), CertsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let mode = fs::metadata(dir)
        .map_err(io_err("stat", dir))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::debug!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "setting mode 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(io_err("set permissions on", dir))?;
    }
    Ok(())
}

/// An exclusive advisory lock on `dir/.lock`, released when the returned value is dropped.
fn lock_dir(dir: &Path) -> Result<Flock<fs::File>, CertsError> {
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(KEY_MODE)
        .open(&path)
        .map_err(io_err("create", &path))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_err("lock", &path)(io::Error::from(errno)))
}

/// Replaces `path` atomically through a temporary file in the same directory, created with
/// its final `mode` (never widened or chmod-ed later), synced, then renamed onto `path`: a
/// reader sees the old file or the new one, never half a file, and a secret never exists with
/// a wider mode than `mode`.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>, mode: u32) -> Result<(), CertsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp)(e)),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(contents.as_ref())
        .map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}

fn validate_trust_domain(td: &str) -> Result<(), CertsError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(CertsError::InvalidTrustDomain(td.to_owned()))
    }
}

/// Agent names become a SPIFFE path segment and file names: keep them to the SPIFFE segment
/// alphabet, and refuse names that would collide with another agent's key or bundle file.
fn validate_agent_name(name: &str) -> Result<(), CertsError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && !name.ends_with("-key")
        && !name.ends_with("-bundle")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(CertsError::InvalidAgentName(name.to_owned()))
    }
}
