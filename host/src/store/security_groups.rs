//! Security groups as stored: per VPC, stateful, with ingress and egress
//! rules (protocol, port range, and a CIDR or another group as the other
//! side), and which interfaces are in which groups. As in EC2, a VPC's
//! `default` group admits traffic from its own members, and every new
//! group may send anywhere until its egress rule is revoked.

use ipnet::Ipv4Net;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{new_id, now_ms, HostStore};
use crate::HostError;

/// Which way a rule admits traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "egress" {
            Self::Egress
        } else {
            Self::Ingress
        }
    }
}

/// What a rule matches: a protocol, with a port range for TCP and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    All,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::All => "all",
        }
    }

    /// Reads a protocol as users write it (`tcp`, `udp`, `icmp`, `all` or
    /// `-1` as in EC2).
    pub fn parse(s: &str) -> Result<Self, HostError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "icmp" => Ok(Self::Icmp),
            "all" | "-1" => Ok(Self::All),
            other => Err(HostError::Invalid(format!(
                "`{other}` is not a protocol; use tcp, udp, icmp or all"
            ))),
        }
    }
}

/// The other side of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    Cidr(String),
    Group(String),
}

/// One rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub id: String,
    pub group_id: String,
    pub direction: Direction,
    pub protocol: Protocol,
    /// The port range (TCP and UDP only).
    pub ports: Option<(u16, u16)>,
    pub peer: Peer,
}

/// A rule as asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub direction: Direction,
    pub protocol: Protocol,
    pub ports: Option<(u16, u16)>,
    pub peer: Peer,
}

impl RuleSpec {
    /// Checks a rule: TCP and UDP need a port range, ICMP and `all` take
    /// none; a CIDR is IPv4 (`0.0.0.0/0` for anywhere).
    pub fn new(
        direction: Direction,
        protocol: Protocol,
        ports: Option<&str>,
        peer: Peer,
    ) -> Result<Self, HostError> {
        let ports = match (protocol, ports) {
            (Protocol::Tcp | Protocol::Udp, Some(p)) => Some(parse_ports(p)?),
            (Protocol::Tcp | Protocol::Udp, None) => {
                return Err(HostError::Invalid(format!(
                    "a {} rule needs --port PORT or --port FROM-TO",
                    protocol.as_str()
                )))
            }
            (_, Some(_)) => {
                return Err(HostError::Invalid(format!(
                    "a {} rule has no ports; drop --port",
                    protocol.as_str()
                )))
            }
            (_, None) => None,
        };
        let peer = match peer {
            Peer::Cidr(c) => {
                let net: Ipv4Net = c.parse().map_err(|_| {
                    HostError::Invalid(format!(
                        "`{c}` is not an IPv4 CIDR block (e.g. 10.1.0.0/16, or 0.0.0.0/0 for anywhere)"
                    ))
                })?;
                Peer::Cidr(net.trunc().to_string())
            }
            Peer::Group(g) => {
                if !is_group_id(&g) {
                    return Err(HostError::Invalid(format!(
                        "`{g}` is not a security group id (sg-…)"
                    )));
                }
                Peer::Group(g)
            }
        };
        Ok(Self {
            direction,
            protocol,
            ports,
            peer,
        })
    }
}

/// `sg-` and hex digits.
pub fn is_group_id(s: &str) -> bool {
    s.strip_prefix("sg-")
        .is_some_and(|h| !h.is_empty() && h.len() <= 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn parse_ports(p: &str) -> Result<(u16, u16), HostError> {
    let bad = || {
        HostError::Invalid(format!(
            "`{p}` is not a port or a port range (1-65535, e.g. 22 or 8000-8080)"
        ))
    };
    let one = |s: &str| -> Result<u16, HostError> {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(bad)
    };
    let (from, to) = match p.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(p)?, one(p)?),
    };
    if from > to {
        return Err(bad());
    }
    Ok((from, to))
}

/// A security group as stored, with its rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: String,
    pub vpc_id: String,
    pub region: String,
    pub name: String,
    pub description: String,
    pub is_default: bool,
    pub created_at: i64,
    pub rules: Vec<RuleRecord>,
}

fn group_from_row(r: &Row) -> rusqlite::Result<GroupRecord> {
    Ok(GroupRecord {
        id: r.get("id")?,
        vpc_id: r.get("vpc_id")?,
        region: r.get("region")?,
        name: r.get("name")?,
        description: r.get("description")?,
        is_default: r.get("is_default")?,
        created_at: r.get("created_at")?,
        rules: Vec::new(),
    })
}

fn rule_from_row(r: &Row) -> rusqlite::Result<RuleRecord> {
    let from: Option<u16> = r.get("port_from")?;
    let to: Option<u16> = r.get("port_to")?;
    let cidr: Option<String> = r.get("cidr")?;
    let group: Option<String> = r.get("source_group")?;
    Ok(RuleRecord {
        id: r.get("id")?,
        group_id: r.get("group_id")?,
        direction: Direction::parse(&r.get::<_, String>("direction")?),
        protocol: Protocol::parse(&r.get::<_, String>("protocol")?).unwrap_or(Protocol::All),
        ports: from.zip(to),
        peer: match (cidr, group) {
            (_, Some(g)) => Peer::Group(g),
            (Some(c), None) => Peer::Cidr(c),
            (None, None) => Peer::Cidr("0.0.0.0/0".into()),
        },
    })
}

/// A group's name as users give it: 1 to 255 printable ASCII characters,
/// not starting with `sg-` (EC2's rule).
pub fn check_group_name(name: &str) -> Result<(), HostError> {
    if name.is_empty()
        || name.len() > 255
        || !name.bytes().all(|b| (0x20..0x7f).contains(&b))
        || name.starts_with("sg-")
    {
        return Err(HostError::Invalid(format!(
            "`{}` is not a security group name: 1 to 255 printable ASCII characters, not starting with sg-",
            name.escape_debug()
        )));
    }
    Ok(())
}

fn insert_rule(conn: &Connection, group_id: &str, rule: &RuleSpec) -> Result<String, HostError> {
    let id = new_id("sgr");
    let (cidr, group) = match &rule.peer {
        Peer::Cidr(c) => (Some(c.as_str()), None),
        Peer::Group(g) => (None, Some(g.as_str())),
    };
    conn.execute(
        "INSERT INTO security_group_rules (id, group_id, direction, protocol, port_from, port_to, cidr, source_group, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            group_id,
            rule.direction.as_str(),
            rule.protocol.as_str(),
            rule.ports.map(|p| p.0),
            rule.ports.map(|p| p.1),
            cidr,
            group,
            now_ms()
        ],
    )?;
    Ok(id)
}

fn insert_group(
    conn: &Connection,
    vpc_id: &str,
    region: &str,
    name: &str,
    description: &str,
    is_default: bool,
) -> Result<String, HostError> {
    let id = new_id("sg");
    conn.execute(
        "INSERT INTO security_groups (id, vpc_id, region, name, description, is_default, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, vpc_id, region, name, description, is_default, now_ms()],
    )?;
    let anywhere = RuleSpec {
        direction: Direction::Egress,
        protocol: Protocol::All,
        ports: None,
        peer: Peer::Cidr("0.0.0.0/0".into()),
    };
    insert_rule(conn, &id, &anywhere)?;
    if is_default {
        let members = RuleSpec {
            direction: Direction::Ingress,
            protocol: Protocol::All,
            ports: None,
            peer: Peer::Group(id.clone()),
        };
        insert_rule(conn, &id, &members)?;
    }
    Ok(id)
}

/// The VPC's `default` group, made when first asked for (inside the
/// caller's transaction).
fn default_group_in(conn: &Connection, vpc_id: &str, region: &str) -> Result<String, HostError> {
    let found: Option<String> = conn
        .query_row(
            "SELECT id FROM security_groups WHERE vpc_id = ?1 AND is_default = 1",
            [vpc_id],
            |r| r.get(0),
        )
        .optional()?;
    match found {
        Some(id) => Ok(id),
        None => insert_group(
            conn,
            vpc_id,
            region,
            "default",
            "default VPC security group",
            true,
        ),
    }
}

/// Puts an interface into groups (inside the caller's transaction).
pub(crate) fn join_groups(
    conn: &Connection,
    interface_id: &str,
    groups: &[String],
) -> Result<(), HostError> {
    for g in groups {
        conn.execute(
            "INSERT OR IGNORE INTO interface_groups (interface_id, group_id) VALUES (?1, ?2)",
            params![interface_id, g],
        )?;
    }
    Ok(())
}

impl HostStore {
    /// A security group with its rules.
    pub fn security_group(&self, id: &str) -> Result<GroupRecord, HostError> {
        let mut g = self
            .conn
            .query_row(
                "SELECT * FROM security_groups WHERE id = ?1",
                [id],
                group_from_row,
            )
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!(
                    "no security group {id}; `drydock security-groups` lists the region's groups"
                ))
            })?;
        g.rules = self.rules_of(id)?;
        Ok(g)
    }

    fn rules_of(&self, group_id: &str) -> Result<Vec<RuleRecord>, HostError> {
        let mut st = self.conn.prepare(
            "SELECT * FROM security_group_rules WHERE group_id = ?1 ORDER BY direction DESC, created_at, id",
        )?;
        let rows = st.query_map([group_id], rule_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The region's security groups with their rules (each VPC's default
    /// group made if missing).
    pub fn security_groups(&mut self, region: &str) -> Result<Vec<GroupRecord>, HostError> {
        for vpc in self.vpcs(region)? {
            self.default_security_group(&vpc.id, region)?;
        }
        let ids: Vec<String> = {
            let mut st = self.conn.prepare(
                "SELECT id FROM security_groups WHERE region = ?1 ORDER BY is_default DESC, created_at, id",
            )?;
            let rows = st.query_map([region], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        ids.iter().map(|id| self.security_group(id)).collect()
    }

    /// The VPC's default security group's id.
    pub fn default_security_group(
        &mut self,
        vpc_id: &str,
        region: &str,
    ) -> Result<String, HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let id = default_group_in(&tx, vpc_id, region)?;
        tx.commit()?;
        Ok(id)
    }

    /// Makes a security group in a VPC; its name is unique in the VPC.
    pub fn create_security_group(
        &mut self,
        vpc_id: &str,
        region: &str,
        name: &str,
        description: &str,
    ) -> Result<GroupRecord, HostError> {
        check_group_name(name)?;
        if description.len() > 255 || description.chars().any(char::is_control) {
            return Err(HostError::Invalid(
                "a description is at most 255 characters, without control characters".into(),
            ));
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM security_groups WHERE vpc_id = ?1 AND name = ?2",
            params![vpc_id, name],
            |r| r.get(0),
        )?;
        if taken || name == "default" {
            return Err(HostError::Conflict(format!(
                "VPC {vpc_id} already has a security group named `{name}`"
            )));
        }
        let id = insert_group(&tx, vpc_id, region, name, description, false)?;
        tx.commit()?;
        self.security_group(&id)
    }

    /// Adds a rule; the same rule twice is refused (as EC2's
    /// `InvalidPermission.Duplicate`). A group named as the peer must be
    /// in the same VPC.
    pub fn authorize(&mut self, group_id: &str, rule: &RuleSpec) -> Result<String, HostError> {
        let group = self.security_group(group_id)?;
        if let Peer::Group(peer) = &rule.peer {
            let peer = self.security_group(peer)?;
            if peer.vpc_id != group.vpc_id {
                return Err(HostError::Invalid(format!(
                    "{} is in {}, {} in {}: a rule can only name a group of its own VPC",
                    peer.id, peer.vpc_id, group.id, group.vpc_id
                )));
            }
        }
        if group.rules.iter().any(|r| {
            r.direction == rule.direction
                && r.protocol == rule.protocol
                && r.ports == rule.ports
                && r.peer == rule.peer
        }) {
            return Err(HostError::Conflict(format!(
                "{group_id} already has this rule"
            )));
        }
        insert_rule(&self.conn, group_id, rule)
    }

    /// Removes a rule, named by what it matches; a rule that is not there
    /// is an error.
    pub fn revoke(&mut self, group_id: &str, rule: &RuleSpec) -> Result<(), HostError> {
        let group = self.security_group(group_id)?;
        let found = group.rules.iter().find(|r| {
            r.direction == rule.direction
                && r.protocol == rule.protocol
                && r.ports == rule.ports
                && r.peer == rule.peer
        });
        let Some(found) = found else {
            return Err(HostError::NotFound(format!(
                "{group_id} has no such rule; `drydock security-groups` shows its rules"
            )));
        };
        self.conn.execute(
            "DELETE FROM security_group_rules WHERE id = ?1",
            [&found.id],
        )?;
        Ok(())
    }

    /// Deletes a group that no interface is in and no other group's rule
    /// names; the default group stays.
    pub fn delete_security_group(&mut self, group_id: &str) -> Result<(), HostError> {
        let group = self.security_group(group_id)?;
        if group.is_default {
            return Err(HostError::Conflict(format!(
                "{group_id} is its VPC's default group; it cannot be deleted"
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let members: i64 = tx.query_row(
            "SELECT COUNT(*) FROM interface_groups WHERE group_id = ?1",
            [group_id],
            |r| r.get(0),
        )?;
        if members > 0 {
            return Err(HostError::Conflict(format!(
                "{group_id} is in use by {members} network interface(s); terminate their instances or move them to other groups first"
            )));
        }
        let named_by: Option<String> = tx
            .query_row(
                "SELECT group_id FROM security_group_rules WHERE source_group = ?1 AND group_id != ?1",
                [group_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = named_by {
            return Err(HostError::Conflict(format!(
                "a rule of {other} names {group_id}; revoke it first"
            )));
        }
        tx.execute(
            "DELETE FROM security_group_rules WHERE group_id = ?1",
            [group_id],
        )?;
        tx.execute("DELETE FROM security_groups WHERE id = ?1", [group_id])?;
        tx.commit()?;
        Ok(())
    }

    /// The groups an interface is in.
    pub fn groups_of(&self, interface_id: &str) -> Result<Vec<String>, HostError> {
        let mut st = self.conn.prepare(
            "SELECT group_id FROM interface_groups WHERE interface_id = ?1 ORDER BY group_id",
        )?;
        let rows = st.query_map([interface_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The security groups of a VPC, with their rules.
    pub fn vpc_security_groups(&self, vpc_id: &str) -> Result<Vec<GroupRecord>, HostError> {
        let ids: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM security_groups WHERE vpc_id = ?1 ORDER BY id")?;
            let rows = st.query_map([vpc_id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        ids.iter().map(|id| self.security_group(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_checked_as_users_write_them() {
        let tcp = |p: Option<&str>| {
            RuleSpec::new(
                Direction::Ingress,
                Protocol::Tcp,
                p,
                Peer::Cidr("10.1.0.7/16".into()),
            )
        };
        let r = tcp(Some("22")).unwrap();
        assert_eq!(r.ports, Some((22, 22)));
        assert_eq!(r.peer, Peer::Cidr("10.1.0.0/16".into()), "truncated");
        assert_eq!(tcp(Some("8000-8080")).unwrap().ports, Some((8000, 8080)));
        for bad in [
            None,
            Some("0"),
            Some("70000"),
            Some("90-80"),
            Some("ssh"),
            Some("1-"),
        ] {
            assert!(tcp(bad).is_err(), "{bad:?}");
        }
        assert!(RuleSpec::new(
            Direction::Ingress,
            Protocol::Icmp,
            Some("1"),
            Peer::Cidr("0.0.0.0/0".into())
        )
        .is_err());
        assert!(RuleSpec::new(
            Direction::Ingress,
            Protocol::All,
            None,
            Peer::Cidr("::/0".into())
        )
        .is_err());
        assert!(RuleSpec::new(
            Direction::Ingress,
            Protocol::All,
            None,
            Peer::Group("sg-x; drop".into())
        )
        .is_err());
        assert!(Protocol::parse("gre").is_err());
        assert_eq!(Protocol::parse("-1").unwrap(), Protocol::All);
        for bad in ["", "sg-web", "tab\there", &"x".repeat(256)] {
            assert!(check_group_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn groups_have_ec2s_defaults_and_refuse_duplicates_and_deletes_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HostStore::open(dir.path()).unwrap();
        let subnet = store.default_subnet("region-a").unwrap();
        let default = store
            .default_security_group(&subnet.vpc_id, "region-a")
            .unwrap();
        let d = store.security_group(&default).unwrap();
        assert!(d.is_default);
        assert!(d
            .rules
            .iter()
            .any(|r| r.direction == Direction::Ingress && r.peer == Peer::Group(default.clone())));
        let web = store
            .create_security_group(&subnet.vpc_id, "region-a", "web", "web servers")
            .unwrap();
        assert_eq!(web.rules.len(), 1, "egress anywhere only");
        assert!(store
            .create_security_group(&subnet.vpc_id, "region-a", "web", "")
            .is_err());
        let ssh = RuleSpec::new(
            Direction::Ingress,
            Protocol::Tcp,
            Some("22"),
            Peer::Group(default.clone()),
        )
        .unwrap();
        store.authorize(&web.id, &ssh).unwrap();
        assert!(store.authorize(&web.id, &ssh).is_err(), "a duplicate");
        let e = store
            .delete_security_group(&default)
            .unwrap_err()
            .to_string();
        assert!(e.contains("default group"), "{e}");
        join_groups(&store.conn, "eni-1", std::slice::from_ref(&web.id)).unwrap();
        let e = store
            .delete_security_group(&web.id)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use"), "{e}");
        store
            .conn
            .execute("DELETE FROM interface_groups", [])
            .unwrap();
        store.revoke(&web.id, &ssh).unwrap();
        assert!(store.revoke(&web.id, &ssh).is_err(), "already gone");
        store.delete_security_group(&web.id).unwrap();
        assert_eq!(store.security_groups("region-a").unwrap().len(), 1);
    }
}
