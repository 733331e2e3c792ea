//! The files mode: the certificate and key come from PEM files (cert-manager, or a user's own
//! certificates), reloaded when their content changes.
//!
//! The files are polled: their whole content is compared, not their mtime, so the kubelet's
//! update of a mounted Secret — a new `..2024_…` directory and an atomic swap of the `..data`
//! symlink the key files point through — is picked up like any in-place write. A pair that does
//! not load (a certificate already new with a key still old, mid-update) is not served; the
//! previous certificate stays until the pair is consistent.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::inspect::{self, CertificateInfo};
use super::resolver::CertResolver;
use super::{CERTIFICATE_CONDITION, TlsError};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// Where the PEM files are, and how often to look at them.
#[derive(Clone, Debug)]
pub struct FileSource {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// Time between two reads.
    pub interval: Duration,
}

/// A certificate and key as read from the files.
pub struct Loaded {
    /// What rustls serves.
    pub key: CertifiedKey,
    /// The leaf certificate.
    pub info: CertificateInfo,
    contents: (Vec<u8>, Vec<u8>),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io { path: path.display().to_string(), source })
}

fn parse(cert: Vec<u8>, key: Vec<u8>) -> Result<Loaded, TlsError> {
    let certified = super::certified_key(&cert, &key)?;
    let info = inspect::inspect(&cert).map_err(TlsError::Pem)?;
    Ok(Loaded { key: certified, info, contents: (cert, key) })
}

/// Reads and checks the pair of files.
pub fn load(source: &FileSource) -> Result<Loaded, TlsError> {
    parse(read(&source.cert_file)?, read(&source.key_file)?)
}

/// Marks readiness from the served certificate's validity and sets the expiry metric.
fn report(info: &CertificateInfo, readiness: &Readiness) {
    if info.is_valid_at(OffsetDateTime::now_utc()) {
        readiness.set_met(CERTIFICATE_CONDITION);
    } else {
        readiness.set_unmet(
            CERTIFICATE_CONDITION,
            format!("the certificate in the files is outside its validity ({} to {})", info.not_before, info.not_after),
        );
    }
}

/// Serves `initial` at once, then reloads the files every `source.interval` until `shutdown`.
pub async fn run(
    source: FileSource,
    initial: Loaded,
    resolver: Arc<CertResolver>,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let Loaded { key, info, contents } = initial;
    resolver.replace(key);
    metrics.webhook_certificate_expiry.set(info.not_after.unix_timestamp() as f64);
    report(&info, &readiness);
    let mut served = (contents, info);
    let mut rejected: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut unreadable = false;
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(source.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return,
        }
        let contents = match (read(&source.cert_file), read(&source.key_file)) {
            (Ok(cert), Ok(key)) => (cert, key),
            (Err(e), _) | (_, Err(e)) => {
                if !unreadable {
                    tracing::warn!(error = %e, "cannot read the webhook certificate files; serving the previous certificate");
                    unreadable = true;
                }
                report(&served.1, &readiness);
                continue;
            }
        };
        unreadable = false;
        if contents == served.0 || rejected.as_ref() == Some(&contents) {
            report(&served.1, &readiness);
            continue;
        }
        match parse(contents.0.clone(), contents.1.clone()) {
            Ok(loaded) => {
                resolver.replace(loaded.key);
                metrics.webhook_certificate_expiry.set(loaded.info.not_after.unix_timestamp() as f64);
                tracing::info!(
                    cert_file = %source.cert_file.display(),
                    subject = %loaded.info.subject,
                    not_after = %loaded.info.not_after,
                    "serving the reloaded webhook certificate",
                );
                served = (loaded.contents, loaded.info);
                rejected = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the webhook certificate files do not load; serving the previous certificate");
                rejected = Some(contents);
            }
        }
        report(&served.1, &readiness);
    }
}
