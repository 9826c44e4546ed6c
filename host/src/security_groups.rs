//! Security groups of a region: made, changed and deleted through the
//! store, then written into the VPC's namespace at once, so a rule takes
//! effect on running instances as soon as the command returns.

use crate::store::{GroupRecord, HostStore, RuleSpec, SubnetRecord};
use crate::{Host, HostError};

impl Host {
    /// The groups an interface in `subnet` joins: `ids` (each of the
    /// subnet's VPC), or the VPC's default group when none are named.
    pub(crate) fn groups_for(
        &self,
        store: &mut HostStore,
        subnet: &SubnetRecord,
        ids: &[String],
    ) -> Result<Vec<String>, HostError> {
        if ids.is_empty() {
            return Ok(vec![
                store.default_security_group(&subnet.vpc_id, &self.region)?
            ]);
        }
        let mut groups = Vec::new();
        for g in ids {
            let group = store.security_group(g)?;
            if group.vpc_id != subnet.vpc_id {
                return Err(HostError::Invalid(format!(
                    "security group {g} is in {}, the subnet {} in {}: use groups of the subnet's VPC",
                    group.vpc_id, subnet.id, subnet.vpc_id
                )));
            }
            if !groups.contains(&group.id) {
                groups.push(group.id);
            }
        }
        Ok(groups)
    }

    /// The region's security groups with their rules.
    pub fn security_groups(&self) -> Result<Vec<GroupRecord>, HostError> {
        let mut store = self.store()?;
        store.default_subnet(self.region())?;
        store.security_groups(self.region())
    }

    /// A group of this region.
    pub fn security_group(&self, id: &str) -> Result<GroupRecord, HostError> {
        let g = self.store()?.security_group(id)?;
        self.in_region(id, &g.region.clone(), g)
    }

    /// Makes a group in `vpc_id` (the region's default VPC when `None`).
    pub fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: Option<&str>,
    ) -> Result<GroupRecord, HostError> {
        let mut store = self.store()?;
        let default = store.default_subnet(self.region())?;
        let vpc = match vpc_id {
            None => default.vpc_id,
            Some(v) => {
                let found = store.vpcs(self.region())?.into_iter().find(|x| x.id == v);
                match found {
                    Some(vpc) => vpc.id,
                    None => {
                        return Err(HostError::NotFound(format!(
                            "no VPC {v} in {}; `drydock vpcs` lists them",
                            self.region()
                        )))
                    }
                }
            }
        };
        store.create_security_group(&vpc, self.region(), name, description)
    }

    /// Adds a rule to a group and applies it to running instances.
    pub fn authorize(&self, group_id: &str, rule: &RuleSpec) -> Result<GroupRecord, HostError> {
        let g = self.security_group(group_id)?;
        self.store()?.authorize(group_id, rule)?;
        // Not applied, not recorded: the listing never claims a rule the
        // running instances do not have.
        if let Err(e) = crate::network::refresh_firewall(&self.data_dir, &g.vpc_id) {
            let _ = self.store()?.revoke(group_id, rule);
            return Err(e);
        }
        self.security_group(group_id)
    }

    /// Removes a rule from a group and applies that to running instances.
    pub fn revoke(&self, group_id: &str, rule: &RuleSpec) -> Result<GroupRecord, HostError> {
        let g = self.security_group(group_id)?;
        self.store()?.revoke(group_id, rule)?;
        // A revoke that could not be applied is put back: the rule is still
        // in force on the running instances, and the listing says so.
        if let Err(e) = crate::network::refresh_firewall(&self.data_dir, &g.vpc_id) {
            let _ = self.store()?.authorize(group_id, rule);
            return Err(e);
        }
        self.security_group(group_id)
    }

    /// Deletes a group nothing uses.
    pub fn delete_security_group(&self, group_id: &str) -> Result<(), HostError> {
        self.security_group(group_id)?;
        self.store()?.delete_security_group(group_id)
    }
}
