//! Security groups as nftables rules in a VPC's namespace, written whole
//! and swapped in atomically (one `nft -f` transaction) whenever a group,
//! a rule or a member changes.
//!
//! - `table bridge drydock`: an instance sends only as itself — frames
//!   from its TAP must carry its MAC, its IPv4 address and ARP for it —
//!   and only IPv4 and ARP (the VPC has no IPv6 for rules to miss).
//! - `table inet drydock`, hook forward (bridged IPv4 reaches it through
//!   the bridge's netfilter call, with connection tracking): replies of
//!   tracked connections pass; a new connection must be admitted by an
//!   egress rule of the sender's groups and by an ingress rule of the
//!   receiver's groups. The host (the subnets' routers, the namespace's
//!   own stack) reaches every instance: its traffic leaves through the
//!   output hook, not forward, as the serial console is its way in.
//!
//! Everything written here comes from checked records (addresses parsed,
//! ids of hex digits): nothing a user typed reaches the ruleset as text.

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::store::{Direction, GroupRecord, Peer, Protocol, RuleRecord};

/// How the VPC's traffic may leave it.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Private subnets: nothing from them goes out of the VPC.
    pub private: Vec<ipnet::Ipv4Net>,
    /// The uplink's link in the namespace, when the VPC has a way out:
    /// public subnets' traffic leaves through it, masqueraded; nothing
    /// comes in through it but replies.
    pub uplink: Option<String>,
}

/// One interface as the firewall sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub interface_id: String,
    pub tap: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub groups: Vec<String>,
}

/// The id's hex tail, as nft names take it.
fn tail(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}

fn set_name(group_id: &str) -> String {
    format!("sg_{}", tail(group_id))
}

fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// `PREFIX-HEX`: an id as drydock makes them (its tail names sets and
/// chains).
fn is_hex_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(p, h)| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_lowercase())
            && !h.is_empty()
            && h.len() <= 32
            && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn is_link_name(s: &str) -> bool {
    !s.is_empty() && s.len() < 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn rule_match(rule: &RuleRecord, peer_field: &str) -> Option<String> {
    let mut m = String::new();
    match &rule.peer {
        Peer::Cidr(c) => match c.parse::<ipnet::Ipv4Net>() {
            Ok(net) if net.prefix_len() == 0 => {}
            Ok(net) => {
                let _ = write!(m, "ip {peer_field} {net} ");
            }
            // A damaged record matches nothing rather than everything.
            Err(_) => return None,
        },
        Peer::Group(g) if is_hex_id(g) => {
            let _ = write!(m, "ip {peer_field} @{} ", set_name(g));
        }
        Peer::Group(_) => return None,
    }
    match (rule.protocol, rule.ports) {
        (Protocol::Tcp | Protocol::Udp, Some((from, to))) => {
            let p = rule.protocol.as_str();
            if from == to {
                let _ = write!(m, "meta l4proto {p} th dport {from} ");
            } else {
                let _ = write!(m, "meta l4proto {p} th dport {from}-{to} ");
            }
        }
        (Protocol::Tcp | Protocol::Udp, None) => {
            let _ = write!(m, "meta l4proto {} ", rule.protocol.as_str());
        }
        (Protocol::Icmp, _) => m.push_str("meta l4proto icmp "),
        (Protocol::All, _) => {}
    }
    Some(m)
}

/// The VPC's ruleset: `members` are its interfaces, `groups` its security
/// groups with their rules.
pub fn render(members: &[Member], groups: &[GroupRecord], routing: &Routing) -> String {
    let uplink = routing.uplink.as_deref().filter(|u| is_link_name(u));
    let members: Vec<&Member> = members
        .iter()
        .filter(|m| is_mac(&m.mac) && is_link_name(&m.tap) && is_hex_id(&m.interface_id))
        .collect();
    let groups: Vec<&GroupRecord> = groups.iter().filter(|g| is_hex_id(&g.id)).collect();
    let mut out = String::new();
    // Replacing the tables is one transaction: declare, delete, redefine.
    out.push_str("table bridge drydock\ndelete table bridge drydock\n");
    out.push_str("table inet drydock\ndelete table inet drydock\n");

    out.push_str("table bridge drydock {\n  chain prerouting {\n    type filter hook prerouting priority -300; policy accept;\n");
    for m in &members {
        let t = &m.tap;
        // Plain IPv4 and ARP only: a VLAN-tagged frame (even VLAN 0) or
        // IPv6 would pass by every rule below and by the security groups.
        let _ = writeln!(out, "    iifname \"{t}\" ether type != {{ ip, arp }} drop");
        let _ = writeln!(out, "    iifname \"{t}\" ether saddr != {} drop", m.mac);
        let _ = writeln!(out, "    iifname \"{t}\" ip saddr != {} drop", m.ip);
        let _ = writeln!(out, "    iifname \"{t}\" arp saddr ip != {} drop", m.ip);
        let _ = writeln!(out, "    iifname \"{t}\" arp saddr ether != {} drop", m.mac);
        // Broadcast and multicast IPv4 would reach every guest whatever
        // their ingress rules (ARP's broadcasts stay allowed).
        let _ = writeln!(
            out,
            "    iifname \"{t}\" ether type ip meta pkttype {{ broadcast, multicast }} drop"
        );
        let _ = writeln!(out, "    iifname \"{t}\" accept");
    }
    // A TAP this ruleset does not know (a damaged record) sends nothing.
    out.push_str("    iifname \"tap-*\" drop\n");
    out.push_str("  }\n}\n");

    out.push_str("table inet drydock {\n");
    for g in &groups {
        let ips: Vec<String> = members
            .iter()
            .filter(|m| m.groups.contains(&g.id))
            .map(|m| m.ip.to_string())
            .collect();
        let _ = write!(out, "  set {} {{\n    type ipv4_addr;\n", set_name(&g.id));
        if !ips.is_empty() {
            let _ = writeln!(out, "    elements = {{ {} }}", ips.join(", "));
        }
        out.push_str("  }\n");
    }
    for m in &members {
        let t = tail(&m.interface_id);
        // Egress: a match returns to the forward chain (the receiver's
        // ingress still decides); nothing matching drops.
        let _ = writeln!(out, "  chain out_{t} {{");
        for rule in rules_of(&groups, &m.groups, Direction::Egress) {
            if let Some(matched) = rule_match(rule, "daddr") {
                let _ = writeln!(out, "    {matched}return");
            }
        }
        out.push_str("    drop\n  }\n");
        let _ = writeln!(out, "  chain in_{t} {{");
        for rule in rules_of(&groups, &m.groups, Direction::Ingress) {
            if let Some(matched) = rule_match(rule, "saddr") {
                let _ = writeln!(out, "    {matched}accept");
            }
        }
        out.push_str("    drop\n  }\n");
    }
    out.push_str("  chain forward {\n    type filter hook forward priority 0; policy accept;\n");
    out.push_str("    ct state established,related accept\n    ct state invalid drop\n");
    if let Some(up) = uplink {
        // No public addresses: nothing starts from outside.
        let _ = writeln!(out, "    iifname \"{up}\" drop");
        for net in &routing.private {
            let _ = writeln!(out, "    oifname \"{up}\" ip saddr {net} drop");
        }
    }
    for m in &members {
        let _ = writeln!(
            out,
            "    ip saddr {} jump out_{}",
            m.ip,
            tail(&m.interface_id)
        );
    }
    for m in &members {
        let _ = writeln!(
            out,
            "    ip daddr {} jump in_{}",
            m.ip,
            tail(&m.interface_id)
        );
    }
    out.push_str("  }\n");
    // The metadata service: each instance's requests to 169.254.169.254:80
    // go to its own listener; nothing reaches a listener any other way.
    out.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for m in &members {
        let _ = writeln!(
            out,
            "    iifname \"br-*\" ip saddr {} ip daddr {} tcp dport 80 dnat ip to {}:{}",
            m.ip,
            super::imds::ADDRESS,
            super::imds::ADDRESS,
            super::imds::port_for(m.ip)
        );
    }
    out.push_str("  }\n  chain input {\n    type filter hook input priority 0; policy accept;\n");
    let _ = writeln!(
        out,
        "    iifname \"br-*\" ip daddr {} ct status dnat accept\n    ip daddr {} drop",
        super::imds::ADDRESS,
        super::imds::ADDRESS
    );
    out.push_str("  }\n");
    if let Some(up) = uplink {
        let _ = write!(
            out,
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{up}\" masquerade\n  }}\n"
        );
    }
    out.push_str("}\n");
    out
}

fn rules_of<'a>(
    groups: &'a [&'a GroupRecord],
    member_of: &'a [String],
    direction: Direction,
) -> impl Iterator<Item = &'a RuleRecord> {
    groups
        .iter()
        .copied()
        .filter(move |g| member_of.contains(&g.id))
        .flat_map(|g| g.rules.iter())
        .filter(move |r| r.direction == direction)
}

/// Loads `ruleset` into namespace `ns` in one nft transaction.
pub fn apply(ns: &str, ruleset: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (nftables) in {ns}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|e| format!("cannot hand the ruleset to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft did not finish: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the security groups' ruleset in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, rules: Vec<RuleRecord>) -> GroupRecord {
        GroupRecord {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            region: "region-a".into(),
            name: id.into(),
            description: String::new(),
            is_default: false,
            created_at: 0,
            rules,
        }
    }

    fn rule(
        group: &str,
        direction: Direction,
        protocol: Protocol,
        ports: Option<(u16, u16)>,
        peer: Peer,
    ) -> RuleRecord {
        RuleRecord {
            id: "sgr-1".into(),
            group_id: group.into(),
            direction,
            protocol,
            ports,
            peer,
        }
    }

    #[test]
    fn members_get_their_groups_rules_and_anti_spoofing() {
        let members = vec![
            Member {
                interface_id: "eni-aaaa".into(),
                tap: "tap-aaaa".into(),
                mac: "02:00:00:00:00:0a".into(),
                ip: "10.1.1.4".parse().unwrap(),
                groups: vec!["sg-0eb".into()],
            },
            Member {
                interface_id: "eni-bbbb".into(),
                tap: "tap-bbbb".into(),
                mac: "02:00:00:00:00:0b".into(),
                ip: "10.1.1.5".parse().unwrap(),
                groups: vec!["sg-ad".into()],
            },
            // A damaged record is left out, not written into the ruleset.
            Member {
                interface_id: "eni-cccc".into(),
                tap: "tap\"; flush".into(),
                mac: "02:00:00:00:00:0c".into(),
                ip: "10.1.1.6".parse().unwrap(),
                groups: vec![],
            },
        ];
        let groups = vec![
            group(
                "sg-0eb",
                vec![
                    rule(
                        "sg-0eb",
                        Direction::Ingress,
                        Protocol::Tcp,
                        Some((8080, 8080)),
                        Peer::Group("sg-ad".into()),
                    ),
                    rule(
                        "sg-0eb",
                        Direction::Egress,
                        Protocol::All,
                        None,
                        Peer::Cidr("0.0.0.0/0".into()),
                    ),
                ],
            ),
            group(
                "sg-ad",
                vec![rule(
                    "sg-ad",
                    Direction::Egress,
                    Protocol::Tcp,
                    Some((1, 1024)),
                    Peer::Cidr("10.1.0.0/16".into()),
                )],
            ),
        ];
        let r = render(&members, &groups, &Routing::default());
        assert!(
            r.contains("iifname \"tap-aaaa\" ether saddr != 02:00:00:00:00:0a drop"),
            "{r}"
        );
        assert!(
            r.contains("iifname \"tap-bbbb\" ip saddr != 10.1.1.5 drop"),
            "{r}"
        );
        assert!(
            r.contains("iifname \"tap-bbbb\" ether type != { ip, arp } drop"),
            "{r}"
        );
        assert!(
            r.contains("    iifname \"tap-bbbb\" accept\n    iifname \"tap-*\" drop\n  }"),
            "{r}"
        );
        assert!(!r.contains("flush"), "{r}");
        assert!(
            r.contains("set sg_ad {\n    type ipv4_addr;\n    elements = { 10.1.1.5 }"),
            "{r}"
        );
        assert!(r.contains("chain in_aaaa {\n    ip saddr @sg_ad meta l4proto tcp th dport 8080 accept\n    drop"), "{r}");
        assert!(r.contains("chain out_aaaa {\n    return\n    drop"), "{r}");
        assert!(r.contains("chain in_bbbb {\n    drop"), "{r}");
        assert!(r.contains("chain out_bbbb {\n    ip daddr 10.1.0.0/16 meta l4proto tcp th dport 1-1024 return"), "{r}");
        assert!(!r.contains("masquerade"), "no uplink, no NAT: {r}");
        assert!(
            r.contains("iifname \"br-*\" ip saddr 10.1.1.4 ip daddr 169.254.169.254 tcp dport 80 dnat ip to 169.254.169.254:260"),
            "{r}"
        );
        assert!(
            r.contains(
                "ip daddr 169.254.169.254 ct status dnat accept\n    ip daddr 169.254.169.254 drop"
            ),
            "{r}"
        );
        let routed = render(
            &members,
            &groups,
            &Routing {
                private: vec!["10.1.2.0/24".parse().unwrap()],
                uplink: Some("up-1234".into()),
            },
        );
        assert!(routed.contains("iifname \"up-1234\" drop"), "{routed}");
        assert!(
            routed.contains("oifname \"up-1234\" ip saddr 10.1.2.0/24 drop"),
            "{routed}"
        );
        assert!(
            routed.contains("oifname \"up-1234\" masquerade"),
            "{routed}"
        );
        let hostile = render(
            &members,
            &groups,
            &Routing {
                private: vec![],
                uplink: Some("up\"; flush ruleset".into()),
            },
        );
        assert!(!hostile.contains("flush"), "{hostile}");
        let fwd = &r[r.find("chain forward").unwrap()..];
        assert!(fwd.find("ct state established").unwrap() < fwd.find("jump out_aaaa").unwrap());
        assert!(fwd.find("jump out_bbbb").unwrap() < fwd.find("jump in_aaaa").unwrap());
    }
}
