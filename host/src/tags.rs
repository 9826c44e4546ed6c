//! Tags on instances and volumes (EC2's key=value labels): set, removed,
//! listed, and used to select resources (`tag:KEY=VALUE`).

use super::store::{parse_tag_filter, TagKind, Tags};
use super::{Host, HostError, InstanceRecord, VolumeRecord};

impl Host {
    /// Checks that a resource of `kind` exists in this region.
    fn tag_target(&self, kind: TagKind, id: &str) -> Result<(), HostError> {
        let store = self.store()?;
        let region = match kind {
            TagKind::Instance => store.instance(id)?.region,
            TagKind::Volume => store.volume(id)?.region,
        };
        self.in_region(id, &region, ())
    }

    /// Adds or replaces tags of an instance or volume; returns all its tags.
    pub fn set_tags(&self, kind: TagKind, id: &str, tags: &Tags) -> Result<Tags, HostError> {
        self.tag_target(kind, id)?;
        self.store()?.set_tags(kind, id, tags)
    }

    /// Removes one tag; returns the tags left.
    pub fn remove_tag(&self, kind: TagKind, id: &str, key: &str) -> Result<Tags, HostError> {
        self.tag_target(kind, id)?;
        self.store()?.remove_tag(id, key)
    }

    /// The tags of one resource.
    pub fn tags(&self, id: &str) -> Result<Tags, HostError> {
        self.store()?.tags(id)
    }

    /// Instances of this region, only those matching `filter`
    /// (`tag:KEY=VALUE` or `tag:KEY`) when given.
    pub fn instances_tagged(&self, filter: Option<&str>) -> Result<Vec<InstanceRecord>, HostError> {
        let store = self.store()?;
        let list = store.instances(Some(self.region()))?;
        let Some(filter) = filter else {
            return Ok(list);
        };
        let (key, value) = parse_tag_filter(filter)?;
        let ids = store.tagged(TagKind::Instance, &key, value.as_deref())?;
        Ok(list.into_iter().filter(|i| ids.contains(&i.id)).collect())
    }

    /// Volumes of this region, only those matching `filter` when given.
    pub fn volumes_tagged(&self, filter: Option<&str>) -> Result<Vec<VolumeRecord>, HostError> {
        let store = self.store()?;
        let list = store.volumes(Some(self.region()))?;
        let Some(filter) = filter else {
            return Ok(list);
        };
        let (key, value) = parse_tag_filter(filter)?;
        let ids = store.tagged(TagKind::Volume, &key, value.as_deref())?;
        Ok(list.into_iter().filter(|v| ids.contains(&v.id)).collect())
    }
}

/// A record as JSON with its `tags` added.
pub fn with_tags<T: serde::Serialize>(record: &T, tags: Option<&Tags>) -> serde_json::Value {
    let mut v = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "tags".into(),
            serde_json::to_value(tags.cloned().unwrap_or_default())
                .unwrap_or(serde_json::Value::Null),
        );
    }
    v
}
