//! Network interfaces of their own (issue 22, EC2's elastic network
//! interfaces), with a real n2 guest under QEMU: an interface created in
//! the default subnet is hot-attached to the running instance, the guest
//! configures it from the metadata service (its address on eth1, the
//! host reaches it there), it is detached out of the running VM; attached
//! while the instance is stopped, it is configured at boot; terminating
//! the instance leaves it available; it is deleted. What is not allowed
//! is refused with the fix.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const R: &str = "region-a";
const PW: &str = "pw";

/// Pings `ip` from inside the VPC's network namespace (as the host
/// reaches its guests).
fn ping_in_vpc(vpc: &str, ip: &str) -> bool {
    let ns = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("drydock-") && n.ends_with(&format!("-{vpc}")))
        .expect("the VPC's namespace exists while an instance runs in it");
    Command::new("ip")
        .args(["netns", "exec", &ns, "ping", "-c", "2", "-W", "3", ip])
        .output()
        .unwrap()
        .status
        .success()
}

fn ni(dd: &Drydock, args: &[&str]) -> Value {
    let mut a = vec!["--region", R, "network-interface"];
    a.extend_from_slice(args);
    dd.json(&a)
}

#[test]
fn an_interface_is_hot_attached_configured_from_metadata_detached_and_deleted() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let id = dd.launch(R, &img, &["--type", "n2.small", "--root-password", PW]);
    let eni = ni(&dd, &["create"]);
    let eni_id = eni["id"].as_str().unwrap().to_string();
    let (ip, mac, vpc) = (
        eni["private_ip"].as_str().unwrap().to_string(),
        eni["mac"].as_str().unwrap().to_string(),
        eni["vpc_id"].as_str().unwrap().to_string(),
    );
    assert!(eni["instance_id"].is_null(), "available: {eni}");
    let listed = dd.json(&["--region", R, "network-interfaces"]);
    assert_eq!(
        listed["network_interfaces"].as_array().unwrap().len(),
        2,
        "the primary and the new one: {listed}"
    );

    // Into the running VM: eth1, its address from the metadata service.
    dd.wait_login(R, &id);
    let attached = ni(&dd, &["attach", &eni_id, "--instance", &id]);
    assert_eq!(attached["instance_id"], id.as_str(), "{attached}");
    assert_eq!(attached["device_index"], 1, "{attached}");
    dd.wait_console(
        R,
        &id,
        &format!("drydock: interface eth1 attached ({mac} {ip}/24)"),
    );
    let addr = dd.guest(R, &id, PW, "ip -4 -o addr show dev eth1");
    assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
    assert!(ping_in_vpc(&vpc, &ip), "the host reaches {ip} on eth1");
    // Refused, with the fix.
    for (args, says) in [
        (vec!["delete", eni_id.as_str()], "detach it first"),
        (
            vec!["attach", eni_id.as_str(), "--instance", "i-000000000000"],
            "no instance",
        ),
    ] {
        let mut a = vec!["--region", R, "network-interface"];
        a.extend_from_slice(&args);
        assert_refused(&dd.run(&a), &a, says);
    }
    let primary = dd.instance(R, &id)["network_interface_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            let all = dd.json(&["--region", R, "network-interfaces"]);
            all["network_interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["device_index"] == 0 && e["instance_id"] == id.as_str())
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        });
    let a = ["--region", R, "network-interface", "detach", &primary];
    assert_refused(&dd.run(&a), &a, "primary interface");

    // Out of the running VM.
    let detached = ni(&dd, &["detach", &eni_id]);
    assert!(detached["instance_id"].is_null(), "{detached}");
    dd.wait_console(R, &id, "drydock: interface eth1 detached");
    assert!(!ping_in_vpc(&vpc, &ip), "{ip} is gone with eth1");

    // Attached while stopped: configured at the next boot; then it is
    // part of the VM as started, and stays until a stop.
    dd.stop_instance(R, &id);
    ni(&dd, &["attach", &eni_id, "--instance", &id]);
    dd.start_instance(R, &id);
    dd.wait_console(
        R,
        &id,
        &format!("drydock: interface eth1 attached ({mac} {ip}/24)"),
    );
    assert!(
        ping_in_vpc(&vpc, &ip),
        "the host reaches {ip} after the boot"
    );
    let a = ["--region", R, "network-interface", "detach", &eni_id];
    assert_refused(&dd.run(&a), &a, "stop the instance to detach it");

    // The instance goes; the interface it was given stays, available.
    dd.terminate(R, &id);
    let left = dd.json(&["--region", R, "network-interfaces"]);
    let left = left["network_interfaces"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], eni_id.as_str());
    assert!(left[0]["instance_id"].is_null(), "{left:?}");
    let out = dd.run(&["--region", R, "network-interface", "delete", &eni_id]);
    assert_code(&out, 0);
    let none = dd.json(&["--region", R, "network-interfaces"]);
    assert_eq!(none["network_interfaces"], serde_json::json!([]), "{none}");
}
