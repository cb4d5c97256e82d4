//! Warnings about a config that is valid but risky, given at start and by `check-config`: an API
//! key sent in clear to a host off this machine, an inline key or webhook secret in a file others
//! can read, and a webhook secret with no `[webhook]` receiver to use it.

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
    let hooked = settings
        .providers
        .iter()
        .filter_map(|p| Some((p, p.webhook.as_ref()?)));
    let inline: Vec<&str> = hooked
        .clone()
        .filter(|(_, w)| w.from == super::KeyFrom::Inline)
        .map(|(p, _)| p.name.as_str())
        .collect();
    if let (false, Some(mode)) = (inline.is_empty(), readable_by_others(path)) {
        out.push(format!(
            "config {} holds an inline webhook_secret (provider {}) and is readable by other \
             users (mode {mode:o}): chmod 600 it, or move it to webhook_secret_file",
            path.display(),
            inline.join(", ")
        ));
    }
    if settings.webhook.is_none() {
        for (p, _) in hooked {
            out.push(format!(
                "provider {:?} has a webhook secret but there is no [webhook] table: no receiver \
                 runs, so its events are not taken (polling still mirrors everything); add \
                 [webhook] listen = \"127.0.0.1:8787\"",
                p.name.as_str()
            ));
        }
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
