//! Pure renewal decisions on certificate material: whether the stored material can be kept,
//! should be renewed while it is still served, or must be replaced and never served. Time is
//! a parameter, so every rule is testable.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use super::TlsError;
use super::inspect::{CertificateInfo, cert_covers, inspect, key_matches};
use super::issue::{self, CertificateAuthority, ServingCertRequest};
use super::material::{self, Material};

/// Default share of its lifetime after which a certificate is renewed: two thirds.
pub const DEFAULT_RENEW_FRACTION: f64 = 2.0 / 3.0;

/// What the material must satisfy.
#[derive(Clone, Debug)]
pub struct Requirements {
    /// Names the serving certificate must cover (service names, then extra SANs).
    pub sans: Vec<String>,
    /// Common name of an issued CA.
    pub ca_common_name: String,
    /// Lifetime of an issued CA.
    pub ca_validity: Duration,
    /// Lifetime of an issued serving certificate.
    pub serving_validity: Duration,
    /// Share of its lifetime after which a certificate (CA or serving) is renewed, in (0, 1].
    pub renew_fraction: f64,
}

/// One key of the material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `ca.crt`
    CaCertificate,
    /// `ca.key`
    CaKey,
    /// `tls.crt`
    ServingCertificate,
    /// `tls.key`
    ServingKey,
    /// `ca-previous.crt`
    PreviousCaCertificate,
}

impl Part {
    /// The Secret key holding this part.
    pub fn secret_key(self) -> &'static str {
        match self {
            Part::CaCertificate => material::CA_CERT_KEY,
            Part::CaKey => material::CA_KEY_KEY,
            Part::ServingCertificate => material::TLS_CERT_KEY,
            Part::ServingKey => material::TLS_KEY_KEY,
            Part::PreviousCaCertificate => material::PREVIOUS_CA_CERT_KEY,
        }
    }
}

/// Why material is renewed or replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The key is absent.
    Missing(Part),
    /// The key holds no readable certificate or key.
    Unreadable(Part, String),
    /// The private key does not belong to the certificate.
    KeyMismatch(Part),
    /// `ca.crt` is not a CA certificate.
    NotCa,
    /// The certificate's validity has not started.
    NotYetValid(Part),
    /// The certificate has expired.
    Expired(Part),
    /// The certificate passed the renewal share of its lifetime.
    Expiring(Part),
    /// The serving certificate does not cover these names.
    MissingSans(Vec<String>),
    /// The serving certificate was signed by neither the CA nor the previous CA.
    UnknownIssuer,
    /// The serving certificate was signed by the previous CA.
    SignedByPreviousCa,
    /// The CA is being renewed or replaced, so the serving certificate follows.
    NewCa,
    /// A full serving-certificate cycle passed since the CA rotation: the previous CA goes.
    PreviousCaRetired,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing(part) => write!(f, "{} is missing", part.secret_key()),
            Reason::Unreadable(part, error) => {
                write!(f, "{} is unreadable: {error}", part.secret_key())
            }
            Reason::KeyMismatch(part) => {
                write!(f, "{} does not match its certificate", part.secret_key())
            }
            Reason::NotCa => write!(f, "{} is not a CA certificate", material::CA_CERT_KEY),
            Reason::NotYetValid(part) => write!(f, "{} is not valid yet", part.secret_key()),
            Reason::Expired(part) => write!(f, "{} has expired", part.secret_key()),
            Reason::Expiring(part) => write!(f, "{} passed its renewal time", part.secret_key()),
            Reason::MissingSans(names) => write!(f, "{} does not cover {}", material::TLS_CERT_KEY, names.join(", ")),
            Reason::UnknownIssuer => {
                write!(f, "{} was not signed by the CA", material::TLS_CERT_KEY)
            }
            Reason::SignedByPreviousCa => write!(f, "{} was signed by the previous CA", material::TLS_CERT_KEY),
            Reason::NewCa => write!(f, "the CA changes"),
            Reason::PreviousCaRetired => {
                write!(f, "the previous CA signs no servable certificate any more")
            }
        }
    }
}

/// What to do with one part of the material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Valid and current.
    Keep,
    /// Still servable, but a new one is due.
    Renew(Reason),
    /// Unusable: must be replaced and never served.
    Replace(Reason),
}

impl Decision {
    /// True for [`Decision::Keep`].
    pub fn is_keep(&self) -> bool {
        matches!(self, Decision::Keep)
    }

    fn strength(&self) -> u8 {
        match self {
            Decision::Keep => 0,
            Decision::Renew(_) => 1,
            Decision::Replace(_) => 2,
        }
    }
}

/// The decisions on every part of the material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The CA (certificate and key).
    pub ca: Decision,
    /// The serving certificate and key.
    pub serving: Decision,
    /// Set when the previous CA leaves the bundle (without a CA change).
    pub retire_previous_ca: Option<Reason>,
}

impl Plan {
    /// The overall decision: the strongest of the parts, the CA's first on a tie.
    pub fn decision(&self) -> Decision {
        let strongest = if self.serving.strength() > self.ca.strength() { &self.serving } else { &self.ca };
        match (strongest, &self.retire_previous_ca) {
            (Decision::Keep, Some(reason)) => Decision::Renew(reason.clone()),
            (decision, _) => decision.clone(),
        }
    }

    /// True when nothing needs to be written.
    pub fn is_keep(&self) -> bool {
        self.decision().is_keep()
    }

    /// The names of a new serving certificate: the required ones; when renewing for missing
    /// names, also the names of the current certificate, so that replicas asking for different
    /// extra names (during a rolling update) converge instead of undoing each other's work.
    fn serving_sans(&self, current: &Material, requirements: &Requirements) -> Vec<String> {
        let mut sans = requirements.sans.clone();
        if let Decision::Renew(Reason::MissingSans(_)) = &self.serving
            && let Some(Ok(cert)) = current.tls_cert.as_deref().map(inspect)
        {
            let kept = cert.sans.iter().filter(|name| !cert_covers(&sans, name)).cloned().collect::<Vec<_>>();
            sans.extend(kept);
        }
        sans
    }

    /// Issues what the plan asks for. When the CA changes, the old CA becomes the previous CA if
    /// it is still a valid CA at `now`; if not, `remembered_ca` (the CA this process last saw
    /// in use) is kept instead, so certificates still being served stay trusted.
    pub fn execute(
        &self,
        current: &Material,
        requirements: &Requirements,
        remembered_ca: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<Material, TlsError> {
        let mut next = current.clone();
        if !self.ca.is_keep() {
            let usable = |pem: &[u8]| inspect(pem).is_ok_and(|ca| ca.is_ca && ca.is_valid_at(now));
            let previous =
                current.ca_cert.as_deref().filter(|pem| usable(pem)).or(remembered_ca.filter(|pem| usable(pem)));
            let ca = issue::issue_ca(&requirements.ca_common_name, requirements.ca_validity)?;
            next.previous_ca_cert = previous.map(<[u8]>::to_vec);
            next.ca_cert = Some(ca.cert_pem.into_bytes());
            next.ca_key = Some(ca.key_pem.into_bytes());
        } else if self.retire_previous_ca.is_some() {
            next.previous_ca_cert = None;
        }
        if !self.serving.is_keep() {
            let text =
                |bytes: &Option<Vec<u8>>| String::from_utf8(bytes.clone().unwrap_or_default()).unwrap_or_default();
            let ca = CertificateAuthority { cert_pem: text(&next.ca_cert), key_pem: text(&next.ca_key) };
            let request = ServingCertRequest {
                sans: self.serving_sans(current, requirements),
                validity: requirements.serving_validity,
            };
            let leaf = issue::issue_serving(&ca, &request)?;
            next.tls_cert = Some(leaf.cert_pem.into_bytes());
            next.tls_key = Some(leaf.key_pem.into_bytes());
        }
        Ok(next)
    }
}

/// A part read and checked.
fn read_part(bytes: &Option<Vec<u8>>, part: Part) -> Result<CertificateInfo, Reason> {
    let pem = bytes.as_deref().ok_or(Reason::Missing(part))?;
    inspect(pem).map_err(|e| Reason::Unreadable(part, e))
}

fn check_key(cert: &CertificateInfo, key: &Option<Vec<u8>>, part: Part) -> Result<(), Reason> {
    let key = key.as_deref().ok_or(Reason::Missing(part))?;
    if key_matches(cert, key) { Ok(()) } else { Err(Reason::KeyMismatch(part)) }
}

fn check_validity(cert: &CertificateInfo, part: Part, now: OffsetDateTime) -> Result<(), Reason> {
    if now < cert.not_before {
        Err(Reason::NotYetValid(part))
    } else if now >= cert.not_after {
        Err(Reason::Expired(part))
    } else {
        Ok(())
    }
}

fn decide_ca(
    material: &Material,
    requirements: &Requirements,
    now: OffsetDateTime,
) -> (Decision, Option<CertificateInfo>) {
    let checked = read_part(&material.ca_cert, Part::CaCertificate).and_then(|ca| {
        if !ca.is_ca {
            return Err(Reason::NotCa);
        }
        check_key(&ca, &material.ca_key, Part::CaKey)?;
        check_validity(&ca, Part::CaCertificate, now)?;
        Ok(ca)
    });
    match checked {
        Err(reason) => (Decision::Replace(reason), None),
        Ok(ca) if now >= ca.renewal_time(requirements.renew_fraction) => {
            (Decision::Renew(Reason::Expiring(Part::CaCertificate)), Some(ca))
        }
        Ok(ca) => (Decision::Keep, Some(ca)),
    }
}

/// Decides, part by part, what to do with the stored material at `now`.
pub fn plan(material: &Material, requirements: &Requirements, now: OffsetDateTime) -> Plan {
    let (ca_decision, ca) = decide_ca(material, requirements, now);
    let previous =
        material.previous_ca_cert.as_ref().map(|_| read_part(&material.previous_ca_cert, Part::PreviousCaCertificate));
    let usable_previous = match &previous {
        Some(Ok(previous)) if previous.is_ca && previous.is_valid_at(now) => Some(previous),
        _ => None,
    };
    let serving = read_part(&material.tls_cert, Part::ServingCertificate).and_then(|cert| {
        check_key(&cert, &material.tls_key, Part::ServingKey)?;
        check_validity(&cert, Part::ServingCertificate, now)?;
        Ok(cert)
    });
    let (serving_decision, signed_by_ca) = match serving {
        Err(reason) => (Decision::Replace(reason), false),
        Ok(cert) => {
            let signed_by_ca = ca.as_ref().is_some_and(|ca| cert.is_signed_by(ca));
            let missing = cert.missing_sans(&requirements.sans);
            let decision = if signed_by_ca {
                if !missing.is_empty() {
                    Decision::Renew(Reason::MissingSans(missing))
                } else if now >= cert.renewal_time(requirements.renew_fraction) {
                    Decision::Renew(Reason::Expiring(Part::ServingCertificate))
                } else {
                    Decision::Keep
                }
            } else if usable_previous.is_some_and(|previous| cert.is_signed_by(previous)) {
                Decision::Renew(Reason::SignedByPreviousCa)
            } else {
                Decision::Replace(Reason::UnknownIssuer)
            };
            (decision, signed_by_ca)
        }
    };
    let serving_decision = match (&ca_decision, serving_decision) {
        (Decision::Keep, decision) => decision,
        (_, Decision::Replace(reason)) => Decision::Replace(reason),
        (_, _) => Decision::Renew(Reason::NewCa),
    };
    let retire_previous_ca = match (&ca_decision, previous) {
        (Decision::Keep, Some(Err(reason))) => Some(reason),
        (Decision::Keep, Some(Ok(previous))) if !previous.is_valid_at(now) => {
            Some(Reason::Expired(Part::PreviousCaCertificate))
        }
        (Decision::Keep, Some(Ok(_)))
            if signed_by_ca && serving_decision == Decision::Renew(Reason::Expiring(Part::ServingCertificate)) =>
        {
            Some(Reason::PreviousCaRetired)
        }
        _ => None,
    };
    Plan { ca: ca_decision, serving: serving_decision, retire_previous_ca }
}

/// The overall decision on the stored material at `now`: keep, renew or replace.
pub fn decide(material: &Material, requirements: &Requirements, now: OffsetDateTime) -> Decision {
    plan(material, requirements, now).decision()
}

/// The next time the decision on this material can change by the clock alone: the earliest
/// renewal time or expiry among its readable certificates. `None` when nothing is readable.
pub fn next_review(material: &Material, requirements: &Requirements) -> Option<OffsetDateTime> {
    let mut times = Vec::new();
    for cert in [&material.ca_cert, &material.tls_cert].into_iter().flatten() {
        if let Ok(info) = inspect(cert) {
            times.push(info.renewal_time(requirements.renew_fraction));
            times.push(info.not_after);
        }
    }
    if let Some(Ok(previous)) = material.previous_ca_cert.as_deref().map(inspect) {
        times.push(previous.not_after);
    }
    times.into_iter().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::inspect::inspect_bundle;
    use crate::tls::issue::service_sans;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn requirements() -> Requirements {
        Requirements {
            sans: service_sans("hangar", "system"),
            ca_common_name: "test-ca".into(),
            ca_validity: 300 * DAY,
            serving_validity: 30 * DAY,
            renew_fraction: DEFAULT_RENEW_FRACTION,
        }
    }

    fn fresh(requirements: &Requirements) -> Material {
        let plan = plan(&Material::default(), requirements, OffsetDateTime::now_utc());
        plan.execute(&Material::default(), requirements, None, OffsetDateTime::now_utc()).unwrap()
    }

    fn days(n: f64) -> time::Duration {
        time::Duration::seconds_f64(n * 86400.0)
    }

    #[test]
    fn missing_material_is_replaced_and_fresh_material_kept() {
        let req = requirements();
        let now = OffsetDateTime::now_utc();
        let empty = plan(&Material::default(), &req, now);
        assert_eq!(empty.ca, Decision::Replace(Reason::Missing(Part::CaCertificate)));
        assert_eq!(empty.serving, Decision::Replace(Reason::Missing(Part::ServingCertificate)));
        let material = fresh(&req);
        assert_eq!(
            plan(&material, &req, now),
            Plan { ca: Decision::Keep, serving: Decision::Keep, retire_previous_ca: None }
        );
        let ca = inspect(material.ca_cert.as_deref().unwrap()).unwrap();
        let leaf = inspect(material.tls_cert.as_deref().unwrap()).unwrap();
        assert!(ca.is_ca && !leaf.is_ca);
        assert!(leaf.is_signed_by(&ca));
        assert!(!ca.is_signed_by(&leaf));
        assert_eq!(leaf.sans, req.sans);
        assert!(material.previous_ca_cert.is_none());
    }

    #[test]
    fn serving_certificate_renewed_after_two_thirds_and_replaced_when_expired() {
        let req = requirements();
        let material = fresh(&req);
        let now = OffsetDateTime::now_utc();
        assert!(decide(&material, &req, now + days(19.0)).is_keep());
        assert_eq!(
            decide(&material, &req, now + days(20.5)),
            Decision::Renew(Reason::Expiring(Part::ServingCertificate))
        );
        assert_eq!(
            decide(&material, &req, now + days(31.0)),
            Decision::Replace(Reason::Expired(Part::ServingCertificate))
        );
        let review = next_review(&material, &req).unwrap();
        assert!(review > now + days(19.9) && review < now + days(20.1), "next review at the serving renewal: {review}");
        let renewed = plan(&material, &req, now + days(20.5)).execute(&material, &req, None, now).unwrap();
        assert_eq!(renewed.ca_cert, material.ca_cert, "a serving renewal keeps the CA");
        assert_ne!(renewed.tls_cert, material.tls_cert);
        assert!(decide(&renewed, &req, now).is_keep());
    }

    #[test]
    fn wrong_sans_are_renewed_and_extra_sans_tolerated() {
        let mut req = requirements();
        let material = fresh(&req);
        let now = OffsetDateTime::now_utc();
        req.sans.push("10.0.0.7".into());
        req.sans.push("dev.example".into());
        assert_eq!(
            decide(&material, &req, now),
            Decision::Renew(Reason::MissingSans(vec!["10.0.0.7".into(), "dev.example".into()]))
        );
        let renewed = plan(&material, &req, now).execute(&material, &req, None, now).unwrap();
        let leaf = inspect(renewed.tls_cert.as_deref().unwrap()).unwrap();
        assert!(leaf.sans.contains(&"10.0.0.7".to_string()) && leaf.sans.contains(&"dev.example".to_string()));
        req.sans.truncate(2);
        assert!(decide(&renewed, &req, now).is_keep(), "a certificate covering more names is kept");
    }

    #[test]
    fn replicas_asking_for_different_names_converge() {
        let base = requirements();
        let material = fresh(&base);
        let now = OffsetDateTime::now_utc();
        let mut old_replica = base.clone();
        old_replica.sans.push("old.example".into());
        let mut new_replica = base.clone();
        new_replica.sans.push("new.example".into());
        let by_old = plan(&material, &old_replica, now).execute(&material, &old_replica, None, now).unwrap();
        let by_new = plan(&by_old, &new_replica, now).execute(&by_old, &new_replica, None, now).unwrap();
        assert!(
            decide(&by_new, &old_replica, now).is_keep(),
            "the renewal for missing names kept the other replica's names"
        );
        assert!(decide(&by_new, &new_replica, now).is_keep());
        // A renewal on expiry sheds the names nobody requires any more.
        let later = now + days(20.5);
        let expiring = plan(&by_new, &new_replica, later);
        assert_eq!(expiring.serving, Decision::Renew(Reason::Expiring(Part::ServingCertificate)));
        let renewed = expiring.execute(&by_new, &new_replica, None, now).unwrap();
        assert!(!inspect(renewed.tls_cert.as_deref().unwrap()).unwrap().sans.contains(&"old.example".to_string()));
    }

    #[test]
    fn corrupt_or_mismatched_material_is_replaced() {
        let req = requirements();
        let material = fresh(&req);
        let other = fresh(&req);
        let now = OffsetDateTime::now_utc();
        let garbage = Material {
            tls_cert: Some(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".to_vec()),
            ..material.clone()
        };
        assert!(matches!(
            plan(&garbage, &req, now).serving,
            Decision::Replace(Reason::Unreadable(Part::ServingCertificate, _))
        ));
        let not_pem = Material { tls_cert: Some(vec![0xff, 0, 1]), ..material.clone() };
        assert!(matches!(decide(&not_pem, &req, now), Decision::Replace(Reason::Unreadable(..))));
        let wrong_key = Material { tls_key: other.tls_key.clone(), ..material.clone() };
        assert_eq!(plan(&wrong_key, &req, now).serving, Decision::Replace(Reason::KeyMismatch(Part::ServingKey)));
        let foreign_leaf =
            Material { tls_cert: other.tls_cert.clone(), tls_key: other.tls_key.clone(), ..material.clone() };
        assert_eq!(plan(&foreign_leaf, &req, now).serving, Decision::Replace(Reason::UnknownIssuer));
        let wrong_ca_key = Material { ca_key: other.ca_key.clone(), ..material.clone() };
        let plan_ca = plan(&wrong_ca_key, &req, now);
        assert_eq!(plan_ca.ca, Decision::Replace(Reason::KeyMismatch(Part::CaKey)));
        let replaced = plan_ca.execute(&wrong_ca_key, &req, None, now).unwrap();
        assert_eq!(replaced.previous_ca_cert, material.ca_cert, "a still valid CA certificate stays trusted");
        assert!(decide(&replaced, &req, now).is_keep());
        let leaf_as_ca = Material { ca_cert: material.tls_cert.clone(), ca_key: material.tls_key.clone(), ..material };
        assert_eq!(plan(&leaf_as_ca, &req, now).ca, Decision::Replace(Reason::NotCa));
    }

    #[test]
    fn ca_rotation_keeps_the_old_ca_for_one_serving_cycle() {
        let req = requirements();
        let material = fresh(&req);
        let old_ca = material.ca_cert.clone();
        let start = OffsetDateTime::now_utc();
        // Two thirds of the CA's 300 days have passed: the CA and the serving certificate follow.
        let at = start + days(201.0);
        let rotation = plan(&material, &req, at);
        assert_eq!(rotation.ca, Decision::Renew(Reason::Expiring(Part::CaCertificate)));
        assert_eq!(rotation.serving, Decision::Replace(Reason::Expired(Part::ServingCertificate)));
        let still_valid = plan(&material, &req, start + days(20.5));
        assert!(still_valid.ca.is_keep());
        // At rotation time the CA is still valid, so it becomes the previous CA.
        let rotated =
            Plan { serving: Decision::Renew(Reason::NewCa), ..rotation }.execute(&material, &req, None, start).unwrap();
        assert_eq!(rotated.previous_ca_cert, old_ca);
        assert_ne!(rotated.ca_cert, old_ca);
        let bundle = inspect_bundle(&rotated.ca_bundle()).unwrap();
        assert_eq!(bundle.len(), 2);
        let leaf = inspect(rotated.tls_cert.as_deref().unwrap()).unwrap();
        assert!(leaf.is_signed_by(&bundle[0]), "the new serving certificate chains to the new CA");
        let now = OffsetDateTime::now_utc();
        assert!(
            plan(&rotated, &req, now).is_keep(),
            "the previous CA stays while the first new serving certificate is young"
        );
        let cycle = plan(&rotated, &req, now + days(20.5));
        assert_eq!(cycle.serving, Decision::Renew(Reason::Expiring(Part::ServingCertificate)));
        assert_eq!(cycle.retire_previous_ca, Some(Reason::PreviousCaRetired));
        let retired = cycle.execute(&rotated, &req, None, now).unwrap();
        assert!(retired.previous_ca_cert.is_none());
        assert_eq!(retired.ca_cert, rotated.ca_cert);
        // A serving certificate still signed by the previous CA is renewed, not dropped.
        let lagging = Material { tls_cert: material.tls_cert.clone(), tls_key: material.tls_key.clone(), ..rotated };
        let lagging_plan = plan(&lagging, &req, now);
        assert_eq!(lagging_plan.serving, Decision::Renew(Reason::SignedByPreviousCa));
        assert_eq!(lagging_plan.retire_previous_ca, None);
    }

    #[test]
    fn serving_certificates_never_outlive_their_ca() {
        let req = Requirements { ca_validity: 10 * DAY, serving_validity: 30 * DAY, ..requirements() };
        let material = fresh(&req);
        let ca = inspect(material.ca_cert.as_deref().unwrap()).unwrap();
        let leaf = inspect(material.tls_cert.as_deref().unwrap()).unwrap();
        assert!(leaf.not_after <= ca.not_after);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        for input in [
            &b""[..],
            b"\0\0\0",
            b"-----BEGIN CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(inspect(input).is_err());
        }
        assert!(!key_matches(&inspect(fresh(&requirements()).tls_cert.as_deref().unwrap()).unwrap(), b"not a key"));
    }
}
