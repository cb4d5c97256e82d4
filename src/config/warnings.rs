//! Warnings about a config that is valid but risky, given at start and by `check-config`: an API
//! key sent in clear to a host off this machine, and an inline key in a file others can read.

use std::net::IpAddr;
use std::path::Path;

use super::Settings;

/// Each risk found in `settings`, loaded from `path`, as one sentence saying what to do.
pub fn warnings(settings: &Settings, path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in &settings.providers {
        if p.base_url.scheme() == "http" && !is_loopback(&p.base_url) {
            out.push(format!(
                "provider {:?}: base_url {} is plain http to another host, so the API key travels \
                 in clear; use https",
                p.name.as_str(),
                p.base_url
            ));
        }
    }
    let inline: Vec<&str> = settings
        .providers
        .iter()
        .filter(|p| p.key_source.starts_with("api_key ("))
        .map(|p| p.name.as_str())
        .collect();
    if let (false, Some(mode)) = (inline.is_empty(), readable_by_others(path)) {
        out.push(format!(
            "config {} holds an inline api_key (provider {}) and is readable by other users \
             (mode {mode:o}): chmod 600 it, or move the key to api_key_file",
            path.display(),
            inline.join(", ")
        ));
    }
    out
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The file's permission bits when group or others may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}
