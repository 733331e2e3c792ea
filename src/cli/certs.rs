//! `mcp-hangar certs generate`: a CA and a serving certificate for local development, written
//! as PEM files (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`) — the keys of the self-managed Secret.

use std::path::Path;
use std::process::ExitCode;

use super::{CertsArgs, CertsCommand, CertsGenerateArgs, CliError};
use crate::tls::issue::{self, ServingCertRequest};
use crate::tls::material::{CA_CERT_KEY, CA_KEY_KEY, TLS_CERT_KEY, TLS_KEY_KEY};

/// Common name of the development CA.
const DEV_CA_NAME: &str = "mcp-hangar development CA";

fn write(dir: &Path, name: &str, contents: &str, private: bool) -> Result<(), CliError> {
    use std::io::Write;
    let path = dir.join(name);
    let io_error = |source| CliError::Io { context: format!("writing {}", path.display()), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&path).map_err(io_error)?;
    file.write_all(contents.as_bytes()).map_err(io_error)
}

fn generate(args: &CertsGenerateArgs) -> Result<(), CliError> {
    let mut sans = issue::service_sans(&args.service, &args.namespace);
    sans.extend(args.sans.iter().cloned());
    let ca = issue::issue_ca(DEV_CA_NAME, args.ca_validity)?;
    let leaf = issue::issue_serving(&ca, &ServingCertRequest { sans: sans.clone(), validity: args.cert_validity })?;
    std::fs::create_dir_all(&args.out)
        .map_err(|source| CliError::Io { context: format!("creating {}", args.out.display()), source })?;
    write(&args.out, CA_CERT_KEY, &ca.cert_pem, false)?;
    write(&args.out, CA_KEY_KEY, &ca.key_pem, true)?;
    write(&args.out, TLS_CERT_KEY, &leaf.cert_pem, false)?;
    write(&args.out, TLS_KEY_KEY, &leaf.key_pem, true)?;
    super::emit(&format!(
        "wrote {CA_CERT_KEY}, {CA_KEY_KEY}, {TLS_CERT_KEY}, {TLS_KEY_KEY} to {} (names: {})\n",
        args.out.display(),
        sans.join(", ")
    ));
    Ok(())
}

pub(super) fn run(args: &CertsArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        CertsCommand::Generate(generate_args) => generate(generate_args).map(|()| ExitCode::SUCCESS),
    }
}
