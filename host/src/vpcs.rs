//! VPCs and subnets of a region: made and deleted through the store, then
//! written into the VPC's namespace at once when instances of it run.

use crate::store::{SubnetKind, SubnetRecord, VpcRecord};
use crate::{Host, HostError};

/// A namespace name as `ip netns` takes it, not one of drydock's own.
pub(crate) fn check_uplink(name: &str) -> Result<(), HostError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if !ok {
        return Err(HostError::Invalid(format!(
            "`{name}` is not a network namespace name (letters, digits, `._-`)"
        )));
    }
    if name.starts_with("drydock-") {
        return Err(HostError::Invalid(format!(
            "{name} is a VPC's own namespace; an uplink is a namespace outside drydock"
        )));
    }
    // Without privilege /run/netns may be unreadable: then the network
    // agent, which allows only the uplinks root named, is the check.
    if let Ok(false) = std::path::Path::new(crate::network::NETNS_DIR)
        .join(name)
        .try_exists()
    {
        return Err(HostError::NotFound(format!(
            "there is no network namespace {name} (`ip netns list`); make it first (`ip netns add {name}`)"
        )));
    }
    Ok(())
}

impl Host {
    /// Makes a VPC in this region.
    pub fn create_vpc(&self, cidr: &str) -> Result<VpcRecord, HostError> {
        let mut store = self.store()?;
        store.default_subnet(self.region())?;
        let vpc = store.create_vpc(self.region(), cidr)?;
        store.default_security_group(&vpc.id, self.region())?;
        Ok(vpc)
    }

    fn own_vpc(&self, id: &str) -> Result<VpcRecord, HostError> {
        let vpc = self.store()?.vpc(id)?;
        self.in_region(id, &vpc.region.clone(), vpc)
    }

    /// Deletes a VPC without subnets.
    pub fn delete_vpc(&self, id: &str) -> Result<(), HostError> {
        self.own_vpc(id)?;
        self.store()?.delete_vpc(id)
    }

    /// Gives a VPC a way out through network namespace `uplink` (public
    /// subnets reach it through NAT), or takes it away (`None`); running
    /// instances get the change at once.
    pub fn set_vpc_uplink(&self, id: &str, uplink: Option<&str>) -> Result<VpcRecord, HostError> {
        let before = self.own_vpc(id)?;
        if let Some(u) = uplink {
            check_uplink(u)?;
        }
        self.store()?.set_uplink(id, uplink)?;
        if let Err(e) = crate::network::refresh_firewall(&self.data_dir, id) {
            let _ = self.store()?.set_uplink(id, before.uplink.as_deref());
            return Err(e);
        }
        self.own_vpc(id)
    }

    /// Makes a subnet in one of this region's VPCs.
    pub fn create_subnet(
        &self,
        vpc_id: &str,
        cidr: &str,
        kind: SubnetKind,
    ) -> Result<SubnetRecord, HostError> {
        self.own_vpc(vpc_id)?;
        let subnet = self.store()?.create_subnet(vpc_id, cidr, kind)?;
        crate::network::refresh_firewall(&self.data_dir, vpc_id)?;
        Ok(subnet)
    }

    /// Deletes a subnet no instance uses.
    pub fn delete_subnet(&self, id: &str) -> Result<(), HostError> {
        let subnet = self.store()?.subnet(id)?;
        self.in_region(id, &subnet.region.clone(), ())?;
        self.store()?.delete_subnet(id)?;
        crate::network::refresh_firewall(&self.data_dir, &subnet.vpc_id)
    }
}
