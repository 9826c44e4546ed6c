//! The `net` module: checks over instances' networks, made from the host
//! inside the instance's VPC (its network namespace) — what a user of the
//! instance's service would see.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use drydock_runtime::duration::parse_duration;
use drydock_runtime::RunContext;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Module, Position};

use crate::doc::doc;

type R<T> = Result<T, Box<EvalAltResult>>;

fn fail(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(e.to_string().into(), Position::NONE).into()
}

/// Registers the `net` module.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let open_host = crate::instances::host_opener(ctx);
    let data_dir = ctx.data_dir.clone();
    let mut m = Module::new();
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
        let host = open_host().map_err(fail)?;
        let rec = host.store().map_err(fail)?.instance(instance).map_err(fail)?;
        host.in_region(instance, &rec.region.clone(), ())
            .map_err(fail)?;
        let interfaces = host.store().map_err(fail)?.interfaces(instance).map_err(fail)?;
        let Some(eni) = interfaces.first() else {
            return Err(fail(format!("net::tcp_check: instance {instance} has no network interface")));
        };
        let ip: IpAddr = eni
            .private_ip
            .parse()
            .map_err(|e| fail(format!("net::tcp_check: a stored address is damaged: {e}")))?;
        let address = SocketAddr::new(ip, port);
        let started = Instant::now();
        let result =
            drydock_host::network::connect(&data_dir, &eni.vpc_id, address, timeout);
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
    engine.register_static_module("net", m.into());
}
