//! The instance metadata service at 169.254.169.254, as EC2's IMDSv2:
//! each instance process serves its own instance only. Its listener lives
//! in the VPC's namespace on 169.254.169.254 at a port of its own
//! ([`port_for`]); the namespace's firewall sends each instance's requests
//! to port 80 to its own listener (by source address, which the bridge's
//! anti-spoofing rules make trustworthy) and drops every other way to the
//! listeners — and the listener checks the peer's address again.
//!
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
//!   (1–21600) returns a session token; a request carrying
//!   `X-Forwarded-For` is refused (as EC2 does), and replies leave with an
//!   IP TTL of 1 (the hop limit): they do not survive a router.
//! - Other requests need `X-aws-ec2-metadata-token` with a live token
//!   (401 otherwise), unless the instance allows IMDSv1.
//! - `meta-data/` (instance-id, instance-type, ami-id, local-ipv4, mac,
//!   hostname, local-hostname, placement/region, placement/availability-zone,
//!   public-keys/, security-groups, tags/instance/), `user-data`,
//!   `dynamic/instance-identity/document`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use crate::store::HostStore;

/// The metadata service's address.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The port of an instance's listener: the low 16 bits of its address
/// (a VPC is at most a /16, so ports never collide within one).
pub fn port_for(ip: Ipv4Addr) -> u16 {
    let p = (u32::from(ip) & 0xffff) as u16;
    p.max(1)
}

const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const MAX_TTL: u64 = 21_600;
const MAX_TOKENS: usize = 1024;

/// A running metadata service; it stops when dropped.
pub struct Imds {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Imds {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Service {
    /// Opened once (opening migrates under the database's write lock): a
    /// guest asking in a loop only reads.
    store: Mutex<Option<HostStore>>,
    data_dir: PathBuf,
    instance: String,
    ip: Ipv4Addr,
    tokens: Mutex<HashMap<String, Instant>>,
}

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;

/// Starts the metadata service of `instance` (address `ip`) in the
/// namespace of VPC `vpc_id`.
pub fn start(data_dir: &Path, vpc_id: &str, instance: &str, ip: Ipv4Addr) -> std::io::Result<Imds> {
    let port = port_for(ip);
    let listener: TcpListener = super::listen(data_dir, vpc_id, SocketAddr::from((ADDRESS, port)))?;
    listener.set_nonblocking(true)?;
    let service = Arc::new(Service {
        store: Mutex::new(HostStore::open(data_dir).ok()),
        data_dir: data_dir.to_path_buf(),
        instance: instance.to_string(),
        ip,
        tokens: Mutex::new(HashMap::new()),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("imds-{instance}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!("the metadata service cannot start: {e}");
                    return;
                }
            };
            rt.block_on(serve(listener, service, stopped));
        })?;
    Ok(Imds {
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("the metadata service cannot listen: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = &mut stopped => return,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, or the like: wait instead of spinning.
                tracing::debug!("metadata service: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Only the instance itself (the firewall already makes it so).
        if peer.ip() != std::net::IpAddr::V4(service.ip) {
            tracing::warn!(instance = %service.instance, %peer, "metadata request from another address refused");
            continue;
        }
        // The hop limit: replies die at the first router.
        let ttl: libc::c_int = 1;
        // SAFETY: setsockopt on a socket this task owns, with a c_int that
        // lives across the call.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_TTL,
                &ttl as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let service = service.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let io = hyper_util::rt::TokioIo::new(stream);
            let handler = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, std::convert::Infallible>(service.answer(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, handler);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "text/plain".parse().expect("a valid header"),
    );
    r
}

/// 32 random bytes, URL-safe base64; `None` when the system has no
/// randomness to give (never a guessable token).
fn random_token() -> Option<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ok()?;
    use base64::Engine as _;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Service {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        // Bodies are not used; at most a little is read.
        let _ = http_body_util::Limited::new(body, 4096).collect().await;
        let path = parts.uri.path().to_string();
        if parts.method == Method::PUT && path == "/latest/api/token" {
            if parts.headers.contains_key("x-forwarded-for") {
                return reply(StatusCode::FORBIDDEN, "Forbidden\n");
            }
            let ttl = parts
                .headers
                .get(TTL_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|t| (1..=MAX_TTL).contains(t));
            let Some(ttl) = ttl else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: X-aws-ec2-metadata-token-ttl-seconds must be 1 to 21600\n",
                );
            };
            let Some(token) = random_token() else {
                return reply(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
            };
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            tokens.retain(|_, until| *until > now);
            if tokens.len() >= MAX_TOKENS {
                return reply(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n");
            }
            tokens.insert(token.clone(), now + Duration::from_secs(ttl));
            let mut r = reply(StatusCode::OK, token);
            r.headers_mut().insert(
                TTL_HEADER,
                ttl.to_string().parse().expect("digits are a valid header"),
            );
            return r;
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        let mut guard = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            match HostStore::open(&self.data_dir) {
                Ok(s) => *guard = Some(s),
                Err(e) => {
                    tracing::warn!("metadata: {e}");
                    return reply(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
                }
            }
        }
        let Some(store) = guard.as_ref() else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
        };
        let Ok(inst) = store.instance(&self.instance) else {
            return reply(StatusCode::NOT_FOUND, "Not Found\n");
        };
        let token_ok = parts
            .headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                tokens.get(t).is_some_and(|until| *until > Instant::now())
            });
        if !token_ok && (parts.headers.contains_key(TOKEN_HEADER) || !inst.config.imds_v1) {
            return reply(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        }
        match self.content(store, &inst, &path) {
            Some(text) => reply(StatusCode::OK, text),
            None => reply(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

    fn content(
        &self,
        store: &HostStore,
        inst: &crate::store::InstanceRecord,
        path: &str,
    ) -> Option<String> {
        let eni = store.interfaces(&inst.id).ok()?.into_iter().next();
        let tags = store.tags(&inst.id).unwrap_or_default();
        let keys = &inst.config.authorized_keys;
        let zone = format!("{}a", inst.region);
        let lines = |v: &[&str]| v.join("\n");
        let groups = || -> Vec<String> {
            let Some(e) = &eni else { return Vec::new() };
            store
                .groups_of(&e.id)
                .unwrap_or_default()
                .iter()
                .filter_map(|g| store.security_group(g).ok().map(|g| g.name))
                .collect()
        };
        Some(match path {
            "/latest" | "/latest/" => lines(&["dynamic", "meta-data", "user-data"]),
            "/latest/meta-data" | "/latest/meta-data/" => lines(&[
                "ami-id",
                "hostname",
                "instance-id",
                "instance-type",
                "local-hostname",
                "local-ipv4",
                "mac",
                "network/",
                "placement/",
                "public-keys/",
                "security-groups",
                "tags/",
            ]),
            "/latest/meta-data/ami-id" => inst.image_id.clone(),
            "/latest/meta-data/instance-id" => inst.id.clone(),
            "/latest/meta-data/instance-type" => inst.instance_type.clone(),
            "/latest/meta-data/hostname" | "/latest/meta-data/local-hostname" => {
                inst.config.hostname.clone()
            }
            "/latest/meta-data/local-ipv4" => eni.as_ref()?.private_ip.clone(),
            "/latest/meta-data/mac" => eni.as_ref()?.mac.clone(),
            "/latest/meta-data/placement" | "/latest/meta-data/placement/" => {
                lines(&["availability-zone", "region"])
            }
            "/latest/meta-data/placement/region" => inst.region.clone(),
            "/latest/meta-data/placement/availability-zone" => zone,
            "/latest/meta-data/security-groups" => groups().join("\n"),
            "/latest/meta-data/public-keys" | "/latest/meta-data/public-keys/" => {
                if keys.is_empty() {
                    return None;
                }
                (0..keys.len())
                    .map(|i| format!("{i}=root"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            "/latest/meta-data/tags" | "/latest/meta-data/tags/" => "instance/".into(),
            "/latest/meta-data/tags/instance" | "/latest/meta-data/tags/instance/" => {
                tags.keys().cloned().collect::<Vec<_>>().join("\n")
            }
            "/latest/user-data" => inst.config.user_data.clone()?,
            "/latest/dynamic" | "/latest/dynamic/" => "instance-identity/".into(),
            "/latest/dynamic/instance-identity" | "/latest/dynamic/instance-identity/" => {
                "document".into()
            }
            "/latest/dynamic/instance-identity/document" => {
                let doc = serde_json::json!({
                    "instanceId": inst.id,
                    "instanceType": inst.instance_type,
                    "imageId": inst.image_id,
                    "region": inst.region,
                    "availabilityZone": zone,
                    "privateIp": eni.as_ref().map(|e| e.private_ip.clone()),
                    "architecture": "x86_64",
                    "pendingTime": humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(inst.created_at.max(0) as u64)
                    ).to_string(),
                });
                serde_json::to_string_pretty(&doc).ok()?
            }
            other => {
                if let Some(rest) = other.strip_prefix("/latest/meta-data/public-keys/") {
                    let (index, leaf) = rest.split_once('/').unwrap_or((rest, ""));
                    let key = keys.get(index.parse::<usize>().ok()?)?;
                    return match leaf {
                        "" => Some("openssh-key".into()),
                        "openssh-key" => Some(key.clone()),
                        _ => None,
                    };
                }
                if let Some(key) = other.strip_prefix("/latest/meta-data/tags/instance/") {
                    return tags.get(key).cloned();
                }
                if let Some(rest) = other.strip_prefix("/latest/meta-data/network") {
                    return interfaces_content(store, &inst.id, rest);
                }
                return None;
            }
        })
    }
}

/// `meta-data/network…` (`rest` after `network`): the instance's
/// interfaces by MAC address, as EC2 lists them — what a guest reads to
/// configure an interface attached while it runs.
fn interfaces_content(store: &HostStore, instance: &str, rest: &str) -> Option<String> {
    let rest = rest.trim_end_matches('/');
    let interfaces = store.interfaces(instance).ok()?;
    match rest {
        "" => return Some("interfaces/".into()),
        "/interfaces" => return Some("macs/".into()),
        "/interfaces/macs" => {
            return Some(
                interfaces
                    .iter()
                    .map(|i| format!("{}/", i.mac))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
        _ => {}
    }
    let rest = rest.strip_prefix("/interfaces/macs/")?;
    let (mac, leaf) = rest.split_once('/').unwrap_or((rest, ""));
    let eni = interfaces.iter().find(|i| i.mac == mac)?;
    let subnet = store.subnet(&eni.subnet_id).ok()?;
    Some(match leaf {
        "" => [
            "device-number",
            "interface-id",
            "local-ipv4s",
            "mac",
            "security-group-ids",
            "subnet-id",
            "subnet-ipv4-cidr-block",
            "vpc-id",
        ]
        .join("\n"),
        "device-number" => eni.device_index.to_string(),
        "interface-id" => eni.id.clone(),
        "local-ipv4s" => eni.private_ip.clone(),
        "mac" => eni.mac.clone(),
        "security-group-ids" => store.groups_of(&eni.id).ok()?.join("\n"),
        "subnet-id" => subnet.id.clone(),
        "subnet-ipv4-cidr-block" => subnet.cidr.clone(),
        "vpc-id" => eni.vpc_id.clone(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_the_addresses_low_bits_and_never_zero() {
        assert_eq!(port_for(Ipv4Addr::new(10, 1, 1, 4)), 0x0104);
        assert_eq!(port_for(Ipv4Addr::new(10, 2, 1, 4)), 0x0104, "another VPC");
        assert_ne!(
            port_for(Ipv4Addr::new(10, 1, 1, 4)),
            port_for(Ipv4Addr::new(10, 1, 2, 4))
        );
        assert_eq!(port_for(Ipv4Addr::new(10, 1, 0, 0)), 1);
    }
}
