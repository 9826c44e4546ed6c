//! VPCs, subnets and network interfaces as stored. Each region has a
//! default VPC with one default subnet, made on first use; an instance's
//! primary interface takes the lowest free address of its subnet in the
//! transaction that records the instance.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::{new_id, now_ms, HostStore};
use crate::HostError;

/// A VPC: an address range of one region, its own network.
#[derive(Debug, Clone, Serialize)]
pub struct VpcRecord {
    pub id: String,
    pub region: String,
    pub cidr: String,
    pub is_default: bool,
    pub created_at: i64,
    /// The network namespace its public subnets reach through NAT (an
    /// internet gateway); none: nothing leaves the VPC.
    pub uplink: Option<String>,
}

/// Whether a subnet's instances may reach beyond their VPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetKind {
    /// Egress through NAT to the host's uplink, when one is configured.
    Public,
    /// No route out of the VPC.
    Private,
}

impl SubnetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// A subnet: part of a VPC's range, one bridge on the host.
#[derive(Debug, Clone, Serialize)]
pub struct SubnetRecord {
    pub id: String,
    pub vpc_id: String,
    pub region: String,
    pub cidr: String,
    pub kind: SubnetKind,
    pub is_default: bool,
    pub created_at: i64,
}

impl SubnetRecord {
    /// The subnet's range (checked when it was recorded).
    pub fn net(&self) -> Ipv4Net {
        self.cidr
            .parse()
            .expect("a subnet's CIDR is checked before it is stored")
    }

    /// The subnet's router: its first address, held by the host.
    pub fn gateway(&self) -> Ipv4Addr {
        nth_address(&self.net(), 1)
    }
}

/// An instance's network interface.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceRecord {
    pub id: String,
    /// The instance it is attached to (`None`: available).
    pub instance_id: Option<String>,
    pub subnet_id: String,
    pub vpc_id: String,
    /// 0 is the primary interface.
    pub device_index: u32,
    pub private_ip: String,
    pub mac: String,
    pub created_at: i64,
}

impl InterfaceRecord {
    fn from_row(r: &Row) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            instance_id: r.get("instance_id")?,
            subnet_id: r.get("subnet_id")?,
            vpc_id: r.get("vpc_id")?,
            device_index: r.get("device_index")?,
            private_ip: r.get("private_ip")?,
            mac: r.get("mac")?,
            created_at: r.get("created_at")?,
        })
    }
}

fn vpc_from_row(r: &Row) -> rusqlite::Result<VpcRecord> {
    Ok(VpcRecord {
        id: r.get("id")?,
        region: r.get("region")?,
        cidr: r.get("cidr")?,
        is_default: r.get("is_default")?,
        created_at: r.get("created_at")?,
        uplink: r.get("uplink")?,
    })
}

fn subnet_from_row(r: &Row) -> rusqlite::Result<SubnetRecord> {
    let kind: String = r.get("kind")?;
    Ok(SubnetRecord {
        id: r.get("id")?,
        vpc_id: r.get("vpc_id")?,
        region: r.get("region")?,
        cidr: r.get("cidr")?,
        kind: if kind == "private" {
            SubnetKind::Private
        } else {
            SubnetKind::Public
        },
        is_default: r.get("is_default")?,
        created_at: r.get("created_at")?,
    })
}

fn insert_vpc(conn: &Connection, vpc: &VpcRecord) -> Result<(), HostError> {
    conn.execute(
        "INSERT INTO vpcs (id, region, cidr, is_default, created_at, uplink) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![vpc.id, vpc.region, vpc.cidr, vpc.is_default, vpc.created_at, vpc.uplink],
    )?;
    Ok(())
}

fn insert_subnet(conn: &Connection, subnet: &SubnetRecord) -> Result<(), HostError> {
    conn.execute(
        "INSERT INTO subnets (id, vpc_id, region, cidr, kind, is_default, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            subnet.id,
            subnet.vpc_id,
            subnet.region,
            subnet.cidr,
            subnet.kind.as_str(),
            subnet.is_default,
            subnet.created_at
        ],
    )?;
    Ok(())
}

/// The `n`th address of `net` (0 is the network address).
pub fn nth_address(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

/// The default VPC's range in a region: 10.R.0.0/16, R the region's place
/// in [`crate::REGIONS`] plus one, so regions never overlap (a DR drill
/// restores into another region's addresses).
pub fn default_vpc_cidr(region: &str) -> Ipv4Net {
    let n = crate::REGIONS
        .iter()
        .position(|r| *r == region)
        .unwrap_or(crate::REGIONS.len()) as u8;
    Ipv4Net::new(Ipv4Addr::new(10, 1 + n, 0, 0), 16).expect("a /16 is a valid prefix")
}

/// A MAC address derived from an interface id: locally administered,
/// unicast (02:…), stable for the interface's life.
pub fn mac_for(interface_id: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(interface_id.as_bytes());
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        d[0], d[1], d[2], d[3], d[4]
    )
}

/// The private IPv4 ranges (RFC 1918) a VPC may use.
const PRIVATE_RANGES: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Reads an IPv4 CIDR block with a prefix from `min` to `max`; host bits
/// must be zero (as EC2 insists).
fn parse_cidr(cidr: &str, min: u8, max: u8) -> Result<Ipv4Net, HostError> {
    let net: Ipv4Net = cidr.trim().parse().map_err(|_| {
        HostError::Invalid(format!(
            "`{cidr}` is not an IPv4 CIDR block (e.g. 10.50.0.0/16)"
        ))
    })?;
    if net.trunc() != net {
        return Err(HostError::Invalid(format!(
            "{cidr} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    if !(min..=max).contains(&net.prefix_len()) {
        return Err(HostError::Invalid(format!(
            "{cidr}: the prefix must be from /{min} to /{max}"
        )));
    }
    Ok(net)
}

/// The first address an instance may take: EC2 keeps the first four of a
/// subnet (network, router, DNS, future use) and the last (broadcast).
const FIRST_HOST: u32 = 4;

impl HostStore {
    /// The region's default VPC and subnet, made on first use (in one
    /// transaction: two processes at once make one).
    pub fn default_subnet(&mut self, region: &str) -> Result<SubnetRecord, HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found = tx
            .query_row(
                "SELECT * FROM subnets WHERE region = ?1 AND is_default = 1",
                [region],
                subnet_from_row,
            )
            .optional()?;
        if let Some(subnet) = found {
            return Ok(subnet);
        }
        let vpc_net = default_vpc_cidr(region);
        let vpc = VpcRecord {
            id: new_id("vpc"),
            region: region.to_string(),
            cidr: vpc_net.to_string(),
            is_default: true,
            created_at: now_ms(),
            uplink: None,
        };
        insert_vpc(&tx, &vpc)?;
        let subnet_net = Ipv4Net::new(nth_address(&vpc_net, 256), 24).expect("a /24");
        let subnet = SubnetRecord {
            id: new_id("subnet"),
            vpc_id: vpc.id.clone(),
            region: region.to_string(),
            cidr: subnet_net.to_string(),
            kind: SubnetKind::Public,
            is_default: true,
            created_at: now_ms(),
        };
        insert_subnet(&tx, &subnet)?;
        tx.commit()?;
        Ok(subnet)
    }

    /// A VPC of the region, by id.
    pub fn vpc(&self, id: &str) -> Result<VpcRecord, HostError> {
        self.conn
            .query_row("SELECT * FROM vpcs WHERE id = ?1", [id], vpc_from_row)
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!(
                    "no VPC {id}; `drydock vpcs` lists the region's VPCs"
                ))
            })
    }

    /// Makes a VPC with `cidr`: a private IPv4 range (RFC 1918) from /16
    /// to /24.
    pub fn create_vpc(&mut self, region: &str, cidr: &str) -> Result<VpcRecord, HostError> {
        let net = parse_cidr(cidr, 16, 24)?;
        if !PRIVATE_RANGES
            .iter()
            .any(|r| r.parse::<Ipv4Net>().is_ok_and(|r| r.contains(&net)))
        {
            return Err(HostError::Invalid(format!(
                "{net} is not a private range: a VPC's CIDR is within 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
            )));
        }
        let vpc = VpcRecord {
            id: new_id("vpc"),
            region: region.to_string(),
            cidr: net.to_string(),
            is_default: false,
            created_at: now_ms(),
            uplink: None,
        };
        insert_vpc(&self.conn, &vpc)?;
        Ok(vpc)
    }

    /// Makes a subnet of `vpc_id`: inside the VPC's range, overlapping no
    /// other subnet of it, from /16 to /28.
    pub fn create_subnet(
        &mut self,
        vpc_id: &str,
        cidr: &str,
        kind: SubnetKind,
    ) -> Result<SubnetRecord, HostError> {
        let net = parse_cidr(cidr, 16, 28)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let vpc = tx
            .query_row("SELECT * FROM vpcs WHERE id = ?1", [vpc_id], vpc_from_row)
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!("no VPC {vpc_id}; `drydock vpcs` lists them"))
            })?;
        let vpc_net: Ipv4Net = vpc.cidr.parse().expect("a stored VPC CIDR is valid");
        if !vpc_net.contains(&net) {
            return Err(HostError::Invalid(format!(
                "{net} is not inside {} ({vpc_id})",
                vpc.cidr
            )));
        }
        let others: Vec<SubnetRecord> = {
            let mut st = tx.prepare("SELECT * FROM subnets WHERE vpc_id = ?1")?;
            let rows = st.query_map([vpc_id], subnet_from_row)?;
            rows.collect::<Result<_, _>>()?
        };
        if let Some(o) = others
            .iter()
            .find(|o| o.net().contains(&net) || net.contains(&o.net()))
        {
            return Err(HostError::Conflict(format!(
                "{net} overlaps {} ({}) in {vpc_id}",
                o.cidr, o.id
            )));
        }
        let subnet = SubnetRecord {
            id: new_id("subnet"),
            vpc_id: vpc_id.to_string(),
            region: vpc.region.clone(),
            cidr: net.to_string(),
            kind,
            is_default: false,
            created_at: now_ms(),
        };
        insert_subnet(&tx, &subnet)?;
        tx.commit()?;
        Ok(subnet)
    }

    /// Deletes a subnet no interface uses.
    pub fn delete_subnet(&mut self, id: &str) -> Result<(), HostError> {
        let subnet = self.subnet(id)?;
        if subnet.is_default {
            return Err(HostError::Conflict(format!(
                "{id} is its region's default subnet; it stays"
            )));
        }
        let used: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM network_interfaces WHERE subnet_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if used > 0 {
            return Err(HostError::Conflict(format!(
                "{id} holds {used} instance interface(s); terminate those instances first"
            )));
        }
        self.conn
            .execute("DELETE FROM subnets WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Deletes a VPC without subnets, with its security groups.
    pub fn delete_vpc(&mut self, id: &str) -> Result<(), HostError> {
        let vpc = self.vpc(id)?;
        if vpc.is_default {
            return Err(HostError::Conflict(format!(
                "{id} is its region's default VPC; it stays"
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let subnets: i64 = tx.query_row(
            "SELECT COUNT(*) FROM subnets WHERE vpc_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if subnets > 0 {
            return Err(HostError::Conflict(format!(
                "{id} has {subnets} subnet(s); delete them first (`drydock subnet delete`)"
            )));
        }
        tx.execute(
            "DELETE FROM security_group_rules WHERE group_id IN (SELECT id FROM security_groups WHERE vpc_id = ?1)",
            [id],
        )?;
        tx.execute("DELETE FROM security_groups WHERE vpc_id = ?1", [id])?;
        tx.execute("DELETE FROM vpcs WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Sets (or clears) a VPC's way out.
    pub fn set_uplink(&mut self, id: &str, uplink: Option<&str>) -> Result<(), HostError> {
        self.vpc(id)?;
        self.conn.execute(
            "UPDATE vpcs SET uplink = ?2 WHERE id = ?1",
            params![id, uplink],
        )?;
        Ok(())
    }

    /// The subnets of a VPC.
    pub fn vpc_subnets(&self, vpc_id: &str) -> Result<Vec<SubnetRecord>, HostError> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM subnets WHERE vpc_id = ?1 ORDER BY created_at, id")?;
        let rows = st.query_map([vpc_id], subnet_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn vpcs(&self, region: &str) -> Result<Vec<VpcRecord>, HostError> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM vpcs WHERE region = ?1 ORDER BY created_at, id")?;
        let rows = st.query_map([region], vpc_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn subnets(&self, region: &str) -> Result<Vec<SubnetRecord>, HostError> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM subnets WHERE region = ?1 ORDER BY created_at, id")?;
        let rows = st.query_map([region], subnet_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn subnet(&self, id: &str) -> Result<SubnetRecord, HostError> {
        self.conn
            .query_row("SELECT * FROM subnets WHERE id = ?1", [id], subnet_from_row)
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!(
                    "no subnet {id}; `drydock subnets` lists the region's subnets"
                ))
            })
    }

    /// An instance's interfaces, primary first.
    pub fn interfaces(&self, instance_id: &str) -> Result<Vec<InterfaceRecord>, HostError> {
        let mut st = self.conn.prepare(
            "SELECT * FROM network_interfaces WHERE instance_id = ?1 ORDER BY device_index",
        )?;
        let rows = st.query_map([instance_id], InterfaceRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The primary interface of every instance that has one, by instance.
    pub fn primary_interfaces(
        &self,
    ) -> Result<std::collections::HashMap<String, InterfaceRecord>, HostError> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM network_interfaces WHERE device_index = 0")?;
        let rows = st.query_map([], InterfaceRecord::from_row)?;
        rows.map(|r| {
            r.map_err(HostError::from)
                .map(|i| i.instance_id.clone().map(|id| (id, i)))
        })
        .filter_map(Result::transpose)
        .collect()
    }

    /// Every interface of a VPC (the instances that share its network).
    pub fn vpc_interfaces(&self, vpc_id: &str) -> Result<Vec<InterfaceRecord>, HostError> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM network_interfaces WHERE vpc_id = ?1 ORDER BY private_ip")?;
        let rows = st.query_map([vpc_id], InterfaceRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Gives `instance_id` its primary interface in `subnet`: the lowest free
/// address. Call inside the transaction that records the instance.
pub(crate) fn insert_primary_interface(
    conn: &Connection,
    instance_id: &str,
    subnet: &SubnetRecord,
) -> Result<InterfaceRecord, HostError> {
    insert_interface(conn, Some(instance_id), subnet)
}

/// Makes an interface in `subnet` with its lowest free address, attached
/// to `instance_id` as its primary one, or available (`None`).
pub(crate) fn insert_interface(
    conn: &Connection,
    instance_id: Option<&str>,
    subnet: &SubnetRecord,
) -> Result<InterfaceRecord, HostError> {
    let net = subnet.net();
    let taken: std::collections::HashSet<Ipv4Addr> = {
        let mut st =
            conn.prepare("SELECT private_ip FROM network_interfaces WHERE subnet_id = ?1")?;
        let rows = st.query_map([&subnet.id], |r| r.get::<_, String>(0))?;
        rows.filter_map(|r| r.ok()?.parse().ok()).collect()
    };
    let last = (1u32 << (32 - net.prefix_len())) - 2;
    let ip = (FIRST_HOST..=last)
        .map(|n| nth_address(&net, n))
        .find(|a| !taken.contains(a))
        .ok_or_else(|| {
            HostError::Conflict(format!(
                "subnet {} ({}) has no free address; terminate an instance in it or use another subnet",
                subnet.id, subnet.cidr
            ))
        })?;
    let id = new_id("eni");
    let rec = InterfaceRecord {
        mac: mac_for(&id),
        id,
        instance_id: instance_id.map(str::to_string),
        subnet_id: subnet.id.clone(),
        vpc_id: subnet.vpc_id.clone(),
        device_index: 0,
        private_ip: ip.to_string(),
        created_at: now_ms(),
    };
    conn.execute(
        "INSERT INTO network_interfaces (id, instance_id, subnet_id, vpc_id, device_index, private_ip, mac, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            rec.id,
            rec.instance_id,
            rec.subnet_id,
            rec.vpc_id,
            rec.device_index,
            rec.private_ip,
            rec.mac,
            rec.created_at
        ],
    )?;
    Ok(rec)
}

/// Frees an instance's interfaces (at terminate): its primary interface
/// goes (its address back to its subnet, out of its security groups);
/// the others are detached and stay, available (as EC2's interfaces
/// attached after launch).
pub(crate) fn delete_interfaces(conn: &Connection, instance_id: &str) -> Result<(), HostError> {
    conn.execute(
        "DELETE FROM interface_groups WHERE interface_id IN
             (SELECT id FROM network_interfaces WHERE instance_id = ?1 AND device_index = 0)",
        [instance_id],
    )?;
    conn.execute(
        "DELETE FROM network_interfaces WHERE instance_id = ?1 AND device_index = 0",
        [instance_id],
    )?;
    conn.execute(
        "UPDATE network_interfaces SET instance_id = NULL, device_index = 0 WHERE instance_id = ?1",
        [instance_id],
    )?;
    Ok(())
}

impl HostStore {
    /// One interface.
    pub fn interface(&self, id: &str) -> Result<InterfaceRecord, HostError> {
        self.conn
            .query_row(
                "SELECT * FROM network_interfaces WHERE id = ?1",
                [id],
                InterfaceRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| {
                HostError::NotFound(format!(
                    "no network interface `{id}`; list them with `drydock network-interfaces`"
                ))
            })
    }

    /// A region's interfaces (through their subnets), oldest first.
    pub fn region_interfaces(&self, region: &str) -> Result<Vec<InterfaceRecord>, HostError> {
        let mut st = self.conn.prepare(
            "SELECT n.* FROM network_interfaces n JOIN subnets s ON s.id = n.subnet_id
             WHERE s.region = ?1 ORDER BY n.created_at, n.id",
        )?;
        let rows = st.query_map([region], InterfaceRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes an available interface in `subnet`, in `groups`.
    pub fn create_interface(
        &mut self,
        subnet: &SubnetRecord,
        groups: &[String],
    ) -> Result<InterfaceRecord, HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rec = insert_interface(&tx, None, subnet)?;
        super::join_groups(&tx, &rec.id, groups)?;
        tx.commit()?;
        Ok(rec)
    }

    /// Attaches available interface `id` to `instance` at `device_index`;
    /// `false` when it is no longer available or the index is taken (a
    /// concurrent attach won).
    pub fn attach_interface(
        &mut self,
        id: &str,
        instance: &str,
        device_index: u32,
    ) -> Result<bool, HostError> {
        let n = self.conn.execute(
            "UPDATE network_interfaces SET instance_id = ?2, device_index = ?3
             WHERE id = ?1 AND instance_id IS NULL
               AND NOT EXISTS (SELECT 1 FROM network_interfaces
                               WHERE instance_id = ?2 AND device_index = ?3)",
            params![id, instance, device_index],
        )?;
        Ok(n == 1)
    }

    /// Makes interface `id` available again (never a primary one).
    pub fn detach_interface(&mut self, id: &str) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE network_interfaces SET instance_id = NULL, device_index = 0
             WHERE id = ?1 AND device_index > 0",
            [id],
        )?;
        Ok(())
    }

    /// Deletes available interface `id`; `false` when it is attached.
    pub fn delete_interface(&mut self, id: &str) -> Result<bool, HostError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "DELETE FROM network_interfaces WHERE id = ?1 AND instance_id IS NULL",
            [id],
        )?;
        if n == 1 {
            tx.execute("DELETE FROM interface_groups WHERE interface_id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_subnet_is_made_once_and_addresses_are_handed_out_lowest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HostStore::open(dir.path()).unwrap();
        let a = store.default_subnet("region-a").unwrap();
        let again = store.default_subnet("region-a").unwrap();
        assert_eq!(a.id, again.id);
        assert_eq!(a.cidr, "10.1.1.0/24");
        assert_eq!(a.gateway().to_string(), "10.1.1.1");
        let b = store.default_subnet("region-b").unwrap();
        assert_eq!(b.cidr, "10.2.1.0/24", "regions do not overlap");
        assert_eq!(store.vpcs("region-a").unwrap().len(), 1);

        let one = insert_primary_interface(&store.conn, "i-1", &a).unwrap();
        let two = insert_primary_interface(&store.conn, "i-2", &a).unwrap();
        assert_eq!(one.private_ip, "10.1.1.4");
        assert_eq!(two.private_ip, "10.1.1.5");
        assert_ne!(one.mac, two.mac);
        assert!(one.mac.starts_with("02:"));
        delete_interfaces(&store.conn, "i-1").unwrap();
        let three = insert_primary_interface(&store.conn, "i-3", &a).unwrap();
        assert_eq!(three.private_ip, "10.1.1.4", "a freed address is reused");
        assert_eq!(store.interfaces("i-3").unwrap().len(), 1);
    }

    #[test]
    fn a_full_subnet_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostStore::open(dir.path()).unwrap();
        let tiny = SubnetRecord {
            id: "subnet-tiny".into(),
            vpc_id: "vpc-x".into(),
            region: "region-a".into(),
            cidr: "10.9.0.0/29".into(),
            kind: SubnetKind::Private,
            is_default: false,
            created_at: 0,
        };
        // .4, .5, .6 (the .7 broadcast is not handed out).
        for i in 0..3 {
            insert_primary_interface(&store.conn, &format!("i-{i}"), &tiny).unwrap();
        }
        let e = insert_primary_interface(&store.conn, "i-9", &tiny)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no free address"), "{e}");
    }
}
