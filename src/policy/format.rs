//! Checks of value formats: Go durations, OCI image references, endpoint URLs,
//! resource quantities, DNS labels and environment variable names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Longest duration string accepted; keeps parsing cheap and overflow-free.
const MAX_DURATION_LEN: usize = 32;

/// Parses a Go duration (`500ms`, `10m`, `1h30m`) that must be positive.
///
/// The grammar is checked here first so that hostile input can never make the
/// parser overflow; the arithmetic is `kube`'s own `Duration`.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "must be a positive Go duration such as 500ms, 30s, 10m or 1h30m";
    if text.len() > MAX_DURATION_LEN || !is_go_duration(text) {
        return Err(HINT.to_string());
    }
    let parsed: kube::core::Duration = text.parse().map_err(|_| HINT.to_string())?;
    if parsed.is_negative() {
        return Err(HINT.to_string());
    }
    let duration: Duration = parsed.into();
    if duration.is_zero() {
        return Err(HINT.to_string());
    }
    Ok(duration)
}

/// `[+]?(number unit)+` with units ns, us, µs, μs, ms, s, m, h and at most 9 integer digits a term.
fn is_go_duration(text: &str) -> bool {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..number_len];
        let mut parts = number.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let frac = parts.next();
        let valid_number = match frac {
            None => !whole.is_empty(),
            Some(f) => (!whole.is_empty() || !f.is_empty()) && !f.contains('.') && f.len() <= 9,
        };
        if !valid_number || whole.len() > 9 {
            return false;
        }
        rest = &rest[number_len..];
        let unit = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u) && !rest[u.len()..].starts_with('s'));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// Formats a duration the way Go prints it (`1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (h, m, s, ms) = (millis / 3_600_000, millis / 60_000 % 60, millis / 1000 % 60, millis % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if ms > 0 {
        let fraction = format!("{ms:03}");
        out.push_str(&format!("{s}.{}s", fraction.trim_end_matches('0')));
    } else if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A parsed OCI image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference<'a> {
    /// Registry host (and port), when given.
    pub registry: Option<&'a str>,
    /// Repository path, e.g. `modelcontextprotocol/mcp-sqlite`.
    pub repository: &'a str,
    /// Tag, when given.
    pub tag: Option<&'a str>,
    /// Digest (`sha256:…`), when given.
    pub digest: Option<&'a str>,
}

/// Longest image reference Kubernetes tooling accepts.
const MAX_IMAGE_LEN: usize = 255 + 128 + 72;

/// Parses `[registry/]path[:tag][@digest]` following the distribution reference grammar.
pub fn parse_image(reference: &str) -> Result<ImageReference<'_>, String> {
    if reference.is_empty() {
        return Err("must not be empty".into());
    }
    if reference.len() > MAX_IMAGE_LEN {
        return Err(format!("must be at most {MAX_IMAGE_LEN} characters"));
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let valid = !t.is_empty()
            && t.len() <= 128
            && t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(format!("tag {t:?} is invalid: use up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
        }
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), rest),
        _ => (None, name),
    };
    if let Some(r) = registry {
        check_registry(r)?;
    }
    if repository.is_empty() {
        return Err("repository name is missing".into());
    }
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository {repository:?} must be lowercase"));
    }
    for component in repository.split('/') {
        if !is_path_component(component) {
            return Err(format!(
                "repository path component {component:?} is invalid: use lowercase letters and digits separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(ImageReference { registry, repository, tag, digest })
}

fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} must look like sha256:<64 hex digits>"));
    };
    let hex_ok = hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    let ok = match algorithm {
        "sha256" => hex.len() == 64 && hex_ok,
        "sha384" => hex.len() == 96 && hex_ok,
        "sha512" => hex.len() == 128 && hex_ok,
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("digest {digest:?} must look like sha256:<64 lowercase hex digits>")) }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || registry.starts_with('[') => (h, Some(p)),
        _ => (registry, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("registry port {p:?} is invalid"));
    }
    let host_ok = if host.starts_with('[') && host.ends_with(']') {
        host[1..host.len() - 1].parse::<Ipv6Addr>().is_ok()
    } else {
        is_dns_name(host)
    };
    if host_ok { Ok(()) } else { Err(format!("registry host {host:?} is invalid")) }
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // a separator: '.', '_', '__' or one or more '-'
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Hosts that always name the local machine or a cloud metadata service.
const BLOCKED_HOST_NAMES: [&str; 3] = ["localhost", "metadata.google.internal", "metadata"];

/// Why an endpoint host may not be used, or `None` when it is fine.
pub fn blocked_host_reason(host: &url::Host<&str>) -> Option<&'static str> {
    match host {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let local = name == "localhost" || name.ends_with(".localhost");
            (local || BLOCKED_HOST_NAMES.contains(&name.as_str()))
                .then_some("names the local machine or a cloud metadata service")
        }
        url::Host::Ipv4(ip) => blocked_ip_reason(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => blocked_ip_reason(IpAddr::V6(*ip)),
    }
}

/// Why an IP may not be an endpoint host: loopback, unspecified, link-local or cloud metadata.
pub fn blocked_ip_reason(ip: IpAddr) -> Option<&'static str> {
    const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) => blocked_ipv4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return blocked_ipv4_reason(v4);
            }
            if v6.is_loopback() {
                Some("is a loopback address")
            } else if v6.is_unspecified() {
                Some("is the unspecified address")
            } else if v6 == AWS_METADATA_V6 {
                Some("is a cloud metadata address")
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some("is a link-local address")
            } else {
                None
            }
        }
    }
}

fn blocked_ipv4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("is a loopback address")
    } else if ip.is_unspecified() {
        Some("is the unspecified address")
    } else if ip.is_link_local() {
        Some("is a link-local or cloud metadata address")
    } else {
        None
    }
}

/// True for hosts inside the cluster, which may be reached over plain http.
pub fn is_in_cluster_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.ends_with(".svc") || host.ends_with(".svc.cluster.local")
}

/// Parses a Kubernetes quantity (`500m`, `128Mi`, `1.5`, `2e3`) into a comparable number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let more: [(&str, f64); 2] = [("P", 1e15), ("E", 1e18)];
    for (suffix, factor) in suffixes.iter().chain(more.iter()) {
        if let Some(number) = text.strip_suffix(suffix) {
            return parse_decimal(number).map(|n| n * factor);
        }
    }
    if let Some((mantissa, exponent)) = text.split_once(['e', 'E']) {
        let exp: i32 = exponent.parse().ok()?;
        return parse_decimal(mantissa).map(|n| n * 10f64.powi(exp.clamp(-30, 30)));
    }
    parse_decimal(text)
}

fn parse_decimal(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let valid = !unsigned.is_empty()
        && unsigned != "."
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.')
        && unsigned.matches('.').count() <= 1;
    if valid { text.parse().ok() } else { None }
}

/// A DNS-1035 label (`[a-z]([-a-z0-9]*[a-z0-9])?`) of at most `max` characters.
pub fn dns1035_label_error(name: &str, max: usize) -> Option<String> {
    if name.len() > max {
        return Some(format!("must be no more than {max} characters"));
    }
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-';
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name')".to_string()
    })
}

/// A DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters), as Kubernetes object names in a namespace use.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A DNS-1123 subdomain (dot-separated labels, at most 253 characters), as ConfigMap and Secret names use.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// An environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go_syntax_and_must_be_positive() {
        assert_eq!(parse_positive_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_positive_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_positive_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in
            ["", "0", "0s", "-5s", "5", "5 m", "5x", "1e9s", "5m-3s", "9999999999h", "s", ".s", "1..2s", "NaNs", "infs"]
        {
            assert!(parse_positive_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations_format_like_go() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn image_references() {
        let r = parse_image("ghcr.io/modelcontextprotocol/mcp-sqlite:latest").unwrap();
        assert_eq!(r.registry, Some("ghcr.io"));
        assert_eq!(r.tag, Some("latest"));
        let r = parse_image("localhost:5000/a/b").unwrap();
        assert_eq!((r.registry, r.repository, r.tag), (Some("localhost:5000"), "a/b", None));
        let digest = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(parse_image(&digest).unwrap().digest.map(str::len), Some(71));
        for bad in ["", "Ghcr.io/x/Y:1", "repo/UPPER:1", "a//b", "a:", "a:-x", "x@sha256:abc", "-a/b", "a/b:t@", "a b"]
        {
            assert!(parse_image(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn blocked_hosts() {
        let blocked = |u: &str| {
            let url = url::Url::parse(u).unwrap();
            blocked_host_reason(&url.host().unwrap()).is_some()
        };
        for u in [
            "https://127.0.0.1/",
            "https://127.9.9.9/",
            "https://[::1]/",
            "https://0.0.0.0/",
            "https://[::]/",
            "https://169.254.169.254/",
            "https://[fe80::1]/",
            "https://[fd00:ec2::254]/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://2130706433/",
            "https://[::ffff:127.0.0.1]/",
            "https://a.localhost/",
        ] {
            assert!(blocked(u), "{u} should be blocked");
        }
        for u in ["https://api.example.com/", "https://10.0.0.1/", "https://[2001:db8::1]/"] {
            assert!(!blocked(u), "{u} should be allowed");
        }
    }

    #[test]
    fn quantities_compare() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Ki"), Some(1024.0));
        assert!(parse_quantity("128Mi").unwrap() < parse_quantity("512Mi").unwrap());
        assert!(parse_quantity("1").unwrap() > parse_quantity("100m").unwrap());
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("1.2.3"), None);
    }

    #[test]
    fn names() {
        assert!(dns1035_label_error("sqlite-tools", 52).is_none());
        assert!(dns1035_label_error("1abc", 52).is_some());
        assert!(dns1035_label_error(&"a".repeat(53), 52).is_some());
        assert!(is_env_var_name("GITHUB_TOKEN") && is_env_var_name("a.b-c"));
        assert!(!is_env_var_name("1X") && !is_env_var_name("A=B") && !is_env_var_name(""));
    }
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub address: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x:y::/n`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let hint = || format!("{text:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8");
        let (address, prefix) = text.split_once('/').ok_or_else(hint)?;
        let address: IpAddr = address.parse().map_err(|_| hint())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(hint)?;
        Ok(Cidr { address, prefix })
    }

    /// True when `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A DNS name: dot-separated labels of letters, digits and inner '-', at most 253 characters.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A DNS name (`api.example.com`), optionally with a leading `*.` wildcard.
pub fn is_host_pattern(host: &str) -> bool {
    is_dns_name(host.strip_prefix("*.").unwrap_or(host))
}

/// True when `host` matches `pattern` (exact, or any subdomain for `*.example.com`).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => host == pattern,
    }
}

/// True when `path` is `base` or lies below it (both absolute).
pub fn path_within(path: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    base.is_empty() || path == base || path.starts_with(&format!("{base}/"))
}

#[cfg(test)]
mod network_tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_and_paths() {
        assert!(host_matches("*.example.com", "mcp.example.com") && !host_matches("*.example.com", "example.com"));
        assert!(host_matches("mcp.example.com", "MCP.example.com."));
        assert!(is_host_pattern("*.example.com") && !is_host_pattern("a..b") && !is_host_pattern("*"));
        assert!(path_within("/tmp/x", "/tmp") && path_within("/tmp", "/tmp/") && path_within("/data", "/"));
        assert!(!path_within("/tmpx", "/tmp"));
    }
}
