//! The `net` module: checks over instances' networks, made from the host
//! inside the instance's VPC (its network namespace) — what a user of the
//! instance's service would see.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use drydock_runtime::duration::parse_duration;
use drydock_runtime::RunContext;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Module, Position};

use crate::doc::doc;

type R<T> = Result<T, Box<EvalAltResult>>;

fn fail(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(e.to_string().into(), Position::NONE).into()
}

/// The longest URL template `net::http_check` takes.
const MAX_URL: usize = 2048;
/// The most of an answer read looking for its status line.
const MAX_STATUS_LINE: usize = 8192;
/// The longest `net::http_check` waits: a check, not a download.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(300);
/// What `{ip}` in a URL template stands for.
const IP_PLACEHOLDER: &str = "{ip}";

/// Where `net::http_check` sends its GET, read from a URL template before
/// the instance's address is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpTarget {
    /// `None`: `{ip}`, the instance's address; else the address written.
    host: Option<Ipv4Addr>,
    port: u16,
    /// The path and query sent, starting with `/`.
    path: String,
}

const URL_FIX: &str =
    "write it like http://{ip}:8080/health ({ip} is the instance's private address)";

/// Reads `template` (`http://{ip}[:PORT][/PATH]`, or the instance's own
/// address for `{ip}`): anything else — another scheme, another host,
/// credentials, characters a request line cannot carry — is refused, so a
/// runbook cannot make the host fetch from anywhere but the instance.
pub(crate) fn http_target(template: &str) -> Result<HttpTarget, String> {
    if template.len() > MAX_URL {
        return Err(format!(
            "the URL is {} bytes long, more than {MAX_URL}: {URL_FIX}",
            template.len()
        ));
    }
    if let Some(bad) = template.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the URL {template:?} holds {bad:?}: only visible ASCII characters, no spaces (percent-encode them): {URL_FIX}"
        ));
    }
    let Some(rest) = template.strip_prefix("http://") else {
        let scheme = template.split_once("://").map(|(s, _)| s).unwrap_or("");
        let why = if scheme.eq_ignore_ascii_case("https") {
            "https is not checked (the check speaks plain HTTP inside the VPC)".to_string()
        } else if scheme.is_empty() {
            "it does not start with http://".to_string()
        } else {
            format!("its scheme is {scheme:?}, not http")
        };
        return Err(format!("the URL {template:?} is refused: {why}; {URL_FIX}"));
    };
    // The fragment is never sent.
    let rest = rest.split('#').next().unwrap_or("");
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err(format!(
            "the URL {template:?} carries credentials (user@): the check sends none; {URL_FIX}"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("the URL {template:?} has port {p:?}: a TCP port is 1-65535; {URL_FIX}")
            })?;
            (h, port)
        }
        None => (authority, 80),
    };
    let host = if host == IP_PLACEHOLDER {
        None
    } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
        Some(ip)
    } else {
        return Err(format!(
            "the URL {template:?} names the host {host:?}: the check reaches only the instance itself, as {IP_PLACEHOLDER} (or its private address); {URL_FIX}"
        ));
    };
    Ok(HttpTarget { host, port, path })
}

impl HttpTarget {
    /// The address to connect to, for an instance at `ip`: an address
    /// written in the URL must be the instance's own.
    fn address(&self, instance: &str, ip: IpAddr) -> Result<SocketAddr, String> {
        match self.host {
            Some(h) if IpAddr::V4(h) != ip => Err(format!(
                "the URL names {h}, not {instance}'s address {ip}: the check reaches only the instance itself; write {IP_PLACEHOLDER} for its address"
            )),
            _ => Ok(SocketAddr::new(ip, self.port)),
        }
    }

    /// The request: a GET of the path, nothing kept open.
    fn request(&self, addr: SocketAddr) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: drydock-http-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path
        )
    }
}

/// Sends `request` over `stream` and reads the status line of the answer
/// (at most [`MAX_STATUS_LINE`] bytes, until `deadline`): `(status,
/// reason)`.
fn get_status(
    mut stream: TcpStream,
    request: &str,
    deadline: Instant,
    timeout: &str,
) -> Result<(u16, String), String> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {timeout}"))
    };
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| format!("cannot set a write timeout: {e}"))?;
    stream.write_all(request.as_bytes()).map_err(|e| {
        if timed_out(&e) {
            format!("the request could not be sent within {timeout}")
        } else {
            format!("sending the request failed: {e}")
        }
    })?;
    let mut got = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    let line = loop {
        if let Some(end) = got.iter().position(|b| *b == b'\n') {
            break String::from_utf8_lossy(&got[..end]).trim_end().to_string();
        }
        if got.len() >= MAX_STATUS_LINE {
            return Err(format!(
                "the first {MAX_STATUS_LINE} bytes of the answer hold no status line: is it an HTTP server?"
            ));
        }
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let want = buf.len().min(MAX_STATUS_LINE - got.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) if got.is_empty() => {
                return Err(
                    "the connection was closed without an answer: is it an HTTP server?".into(),
                )
            }
            Ok(0) => break String::from_utf8_lossy(&got).trim_end().to_string(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => {
                return Err(format!("no answer within {timeout}"));
            }
            Err(e) => return Err(format!("reading the answer failed: {e}")),
        }
    };
    parse_status_line(&line)
}

/// `HTTP/1.x NNN reason` → `(NNN, reason)`.
fn parse_status_line(line: &str) -> Result<(u16, String), String> {
    let shown: String = line.chars().take(120).collect();
    let not_http = || {
        format!(
            "the answer does not start with an HTTP status line ({shown:?}): is it an HTTP server?"
        )
    };
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(not_http());
    }
    let code = parts.next().unwrap_or("");
    if code.len() != 3 {
        return Err(not_http());
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(not_http)?;
    let reason: String = parts.next().unwrap_or("").chars().take(120).collect();
    Ok((status, reason))
}

/// The VPC and the private address of an instance's primary interface, in
/// the execution's region; `what` names the caller in errors.
fn primary_address<F>(open_host: &F, instance: &str, what: &str) -> R<(String, IpAddr)>
where
    F: Fn() -> Result<drydock_host::Host, drydock_host::HostError>,
{
    let host = open_host().map_err(fail)?;
    let rec = host
        .store()
        .map_err(fail)?
        .instance(instance)
        .map_err(fail)?;
    host.in_region(instance, &rec.region.clone(), ())
        .map_err(fail)?;
    let interfaces = host
        .store()
        .map_err(fail)?
        .interfaces(instance)
        .map_err(fail)?;
    let Some(eni) = interfaces.first() else {
        return Err(fail(format!(
            "{what}: instance {instance} has no network interface"
        )));
    };
    let ip: IpAddr = eni
        .private_ip
        .parse()
        .map_err(|e| fail(format!("{what}: a stored address is damaged: {e}")))?;
    Ok((eni.vpc_id.clone(), ip))
}

/// `net::http_check`: a GET from the host to the instance's own address,
/// inside its VPC.
fn http_check(
    data_dir: &Path,
    vpc_id: &str,
    instance: &str,
    ip: IpAddr,
    target: &HttpTarget,
    timeout: Duration,
    shown_timeout: &str,
) -> R<Map> {
    let address = target
        .address(instance, ip)
        .map_err(|e| fail(format!("net::http_check: {e}")))?;
    let url = format!("http://{address}{}", target.path);
    let started = Instant::now();
    let deadline = started + timeout;
    let result = drydock_host::network::connect(data_dir, vpc_id, address, timeout)
        .map_err(|e| {
            format!("cannot connect to {address}: {e} (is the service listening on port {}? the host reaches every instance whatever its security groups say)", address.port())
        })
        .and_then(|stream| get_status(stream, &target.request(address), deadline, shown_timeout));
    let took = started.elapsed();
    let mut out = Map::new();
    out.insert("address".into(), Dynamic::from(address.to_string()));
    out.insert("url".into(), Dynamic::from(url.clone()));
    out.insert("ms".into(), Dynamic::from(took.as_millis() as i64));
    match result {
        Ok((status, reason)) => {
            let ok = (200..300).contains(&status);
            out.insert("ok".into(), Dynamic::from(ok));
            out.insert("status".into(), Dynamic::from(status as i64));
            let error = if ok {
                Dynamic::UNIT
            } else {
                let hint = match status {
                    300..=399 => "redirects are not followed: check the URL it points to",
                    404 => "is the path right?",
                    400..=499 => "the service refused the request",
                    _ => "the service answered, but not healthy",
                };
                Dynamic::from(format!(
                    "GET {url} answered {status} {reason}, not 2xx: {hint}"
                ))
            };
            out.insert("error".into(), error);
        }
        Err(e) => {
            out.insert("ok".into(), Dynamic::from(false));
            out.insert("status".into(), Dynamic::UNIT);
            out.insert("error".into(), Dynamic::from(format!("GET {url}: {e}")));
        }
    }
    Ok(out)
}

/// Registers the `net` module.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let open_host = crate::instances::host_opener(ctx);
    let data_dir = ctx.data_dir.clone();
    let mut m = Module::new();
    let (open, dir) = (open_host.clone(), data_dir.clone());
    doc("net::tcp_check(instance, port, timeout)", &[
        "Connects from the host to TCP `port` of a running instance's private address, inside its VPC; returns `#{ open, ms, us, address, error }` (`open` false with the reason when nothing accepts, a firewall drops it, or the time runs out).",
        "Fails when the instance has no network interface. Example: `net::tcp_check(id, 22, \"5s\").open`",
    ])
    .set_in(&mut m, move |instance: &str, port: i64, timeout: &str| -> R<Map> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| fail(format!("net::tcp_check: {port} is not a TCP port (1-65535)")))?;
        let timeout = parse_duration(timeout).map_err(|e| fail(format!("net::tcp_check: {e}")))?;
        let (vpc_id, ip) = primary_address(&open, instance, "net::tcp_check")?;
        let address = SocketAddr::new(ip, port);
        let started = Instant::now();
        let result = drydock_host::network::connect(&dir, &vpc_id, address, timeout);
        let mut out = Map::new();
        out.insert("address".into(), Dynamic::from(address.to_string()));
        let took = started.elapsed();
        out.insert("ms".into(), Dynamic::from(took.as_millis() as i64));
        out.insert("us".into(), Dynamic::from(took.as_micros() as i64));
        match result {
            Ok(_stream) => {
                out.insert("open".into(), Dynamic::from(true));
                out.insert("error".into(), Dynamic::UNIT);
            }
            Err(e) => {
                out.insert("open".into(), Dynamic::from(false));
                out.insert("error".into(), Dynamic::from(e.to_string()));
            }
        }
        Ok(out)
    });
    doc("net::http_check(instance, url, timeout)", &[
        "Sends an HTTP/1.1 GET from the host to a running instance's private address, inside its VPC; `url` is a template like `\"http://{ip}:8080/health\"`, `{ip}` standing for the instance's address.",
        "Returns `#{ ok, status, ms, address, url, error }`: `ok` when the answer's status is 2xx; otherwise `error` says why (refused, no answer within `timeout`, the status and reason; redirects are not followed). Only the status line is read (at most 8 KiB); `timeout` (at most 5m) bounds the whole check.",
        "Fails for a URL that is not `http://`, whose host is neither `{ip}` nor the instance's own address, that carries credentials or characters a request line cannot; and when the instance has no network interface. Example: `net::http_check(id, \"http://{ip}:8080/health\", \"5s\").ok`",
    ])
    .set_in(&mut m, move |instance: &str, url: &str, timeout: &str| -> R<Map> {
        let target = http_target(url).map_err(|e| fail(format!("net::http_check: {e}")))?;
        let limit = parse_duration(timeout).map_err(|e| fail(format!("net::http_check: {e}")))?;
        if limit > MAX_HTTP_TIMEOUT || limit.is_zero() {
            return Err(fail(format!(
                "net::http_check: a timeout of {timeout}: give one above 0 and at most 5m (a health check answers quickly)"
            )));
        }
        let (vpc_id, ip) = primary_address(&open_host, instance, "net::http_check")?;
        http_check(&data_dir, &vpc_id, instance, ip, &target, limit, timeout)
    });
    engine.register_static_module("net", m.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_template_for_the_instance_is_read() {
        let t = http_target("http://{ip}:8080/health").unwrap();
        assert_eq!(
            t,
            HttpTarget {
                host: None,
                port: 8080,
                path: "/health".into()
            }
        );
        let a = t.address("i-1", ip("10.1.1.5")).unwrap();
        assert_eq!(a.to_string(), "10.1.1.5:8080");
        assert!(t
            .request(a)
            .starts_with("GET /health HTTP/1.1\r\nHost: 10.1.1.5:8080\r\n"));
        let t = http_target("http://{ip}").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = http_target("http://{ip}?x=1#frag").unwrap();
        assert_eq!(t.path, "/?x=1");
        let t = http_target("http://10.1.1.5:81/a/b?c=d").unwrap();
        assert_eq!(t.address("i-1", ip("10.1.1.5")).unwrap().port(), 81);
        assert_eq!(t.path, "/a/b?c=d");
    }

    #[test]
    fn urls_that_would_reach_elsewhere_are_refused_with_the_fix() {
        for (url, says) in [
            ("https://{ip}/", "https is not checked"),
            ("ftp://{ip}/", "scheme is \"ftp\""),
            ("{ip}:8080/health", "does not start with http://"),
            ("http://example.com/", "names the host \"example.com\""),
            ("http://127.0.0.1:22/", ""),
            ("http://{ip}.evil.example/", "names the host"),
            ("http://user:pw@{ip}/", "credentials"),
            ("http://{ip}:0/", "port \"0\""),
            ("http://{ip}:65536/", "port \"65536\""),
            ("http://{ip}:x/", "port \"x\""),
            ("http://[::1]:80/", "names the host"),
            ("http://{ip}/a b", "no spaces"),
            ("http://{ip}/a\r\nHost: evil", "holds '\\r'"),
        ] {
            match http_target(url) {
                Err(e) => {
                    assert!(e.contains(says), "{url}: {e}");
                    assert!(e.contains("http://{ip}:8080/health"), "names the fix: {e}");
                }
                // A literal address is read, and refused unless it is the
                // instance's own.
                Ok(t) => {
                    assert_eq!(url, "http://127.0.0.1:22/");
                    let e = t.address("i-1", ip("10.1.1.5")).unwrap_err();
                    assert!(
                        e.contains("not i-1's address 10.1.1.5") && e.contains("{ip}"),
                        "{e}"
                    );
                }
            }
        }
        let long = format!("http://{{ip}}/{}", "a".repeat(MAX_URL));
        assert!(http_target(&long).unwrap_err().contains("more than 2048"));
    }

    #[test]
    fn status_lines_are_read_and_anything_else_is_not_http() {
        assert_eq!(
            parse_status_line("HTTP/1.0 200 OK").unwrap(),
            (200, "OK".to_string())
        );
        assert_eq!(
            parse_status_line("HTTP/1.1 404 Not Found").unwrap(),
            (404, "Not Found".to_string())
        );
        assert_eq!(parse_status_line("HTTP/1.1 204").unwrap().0, 204);
        for bad in ["SSH-2.0-dropbear", "HTTP/1.1 2000 OK", "HTTP/1.1 abc", ""] {
            assert!(
                parse_status_line(bad)
                    .unwrap_err()
                    .contains("is it an HTTP server"),
                "{bad}"
            );
        }
    }

    /// A listener on the loopback that reads the request and answers
    /// `answer` (after `delay`); returns its address and what it read.
    fn server(
        answer: &'static [u8],
        delay: Duration,
    ) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            std::thread::sleep(delay);
            let _ = s.write_all(answer);
            String::from_utf8_lossy(&req).into_owned()
        });
        (addr, h)
    }

    fn ask(addr: SocketAddr, limit: Duration) -> Result<(u16, String), String> {
        let t = http_target("http://{ip}/health?x=1").unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        get_status(stream, &t.request(addr), Instant::now() + limit, "1s")
    }

    #[test]
    fn a_get_reads_the_status_and_gives_up_at_the_deadline_or_on_junk() {
        let (addr, h) = server(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfine",
            Duration::ZERO,
        );
        assert_eq!(
            ask(addr, Duration::from_secs(5)).unwrap(),
            (200, "OK".into())
        );
        let req = h.join().unwrap();
        assert!(
            req.starts_with("GET /health?x=1 HTTP/1.1\r\nHost: 127.0.0.1:"),
            "{req}"
        );
        assert!(req.contains("Connection: close\r\n"), "{req}");

        let (addr, _h) = server(b"HTTP/1.1 404 Not Found\r\n\r\n", Duration::ZERO);
        assert_eq!(ask(addr, Duration::from_secs(5)).unwrap().0, 404);

        // A server that never answers: the deadline ends the wait.
        let (addr, _h) = server(b"", Duration::from_secs(3));
        let started = Instant::now();
        let e = ask(addr, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("no answer within 1s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // Something that is not HTTP (an SSH server's banner).
        let (addr, _h) = server(b"SSH-2.0-dropbear_2022.83\r\n", Duration::ZERO);
        let e = ask(addr, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("is it an HTTP server"), "{e}");

        // An endless first line is read no further than the bound.
        static LONG: [u8; 3 * MAX_STATUS_LINE] = [b'x'; 3 * MAX_STATUS_LINE];
        let (addr, _h) = server(&LONG, Duration::ZERO);
        let e = ask(addr, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("hold no status line"), "{e}");
    }
}
