//! The host's state in SQLite: regions' instances, volumes, snapshots,
//! images and their tags, VPCs, subnets and network interfaces, one file
//! per table or group ([`instances`], [`volumes`], [`snapshots`],
//! [`images`], [`tags`], [`network`], [`security_groups`]), the schema and its versioned
//! migrations in [`schema`]. Every change is a transaction; several
//! drydock processes share the file.

mod health;
mod images;
mod instances;
mod network;
pub mod schema;
mod security_groups;
mod snapshots;
mod tags;
mod volumes;

use std::path::Path;

use rusqlite::Connection;

use crate::HostError;

pub use health::StoredStatus;
pub(crate) use images::insert_image;
pub use images::ImageRecord;
pub(crate) use instances::insert_instance;
pub use instances::{AfterHostFailure, InstanceConfig, InstanceRecord, InstanceState};
pub use network::{
    default_vpc_cidr, mac_for, nth_address, InterfaceRecord, SubnetKind, SubnetRecord, VpcRecord,
};
pub(crate) use network::{delete_interfaces, insert_primary_interface};
pub(crate) use security_groups::join_groups;
pub use security_groups::{
    check_group_name, is_group_id, Direction, GroupRecord, Peer, Protocol, RuleRecord, RuleSpec,
};
pub(crate) use snapshots::insert_snapshot;
pub use snapshots::SnapshotRecord;
pub use tags::{check_tag, parse_tag_filter, TagKind, Tags, MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE};
pub(crate) use volumes::insert_volume;
pub use volumes::{VolumeKind, VolumeRecord};

/// The open host database.
pub struct HostStore {
    pub(crate) conn: Connection,
    /// Where the journal is: instances' state changes go into its event
    /// stream.
    data_dir: std::path::PathBuf,
}

pub(crate) use drydock_runtime::ids::now_ms;

pub use drydock_runtime::ids::new_id;

impl HostStore {
    /// Opens (creating, or migrating to this drydock's schema) the host
    /// database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, HostError> {
        std::fs::create_dir_all(data_dir).map_err(|e| HostError::io("create", data_dir, e))?;
        let path = data_dir.join("host.sqlite3");
        let newer = std::cell::Cell::new(None);
        let conn = drydock_runtime::sqlite::open_shared(&path, "FULL", |c| {
            newer.set(schema::migrate(c)?);
            Ok(())
        })?;
        if let Some(version) = newer.get() {
            return Err(HostError::Conflict(format!(
                "the host database {} was written by a newer drydock (schema {version}, this one knows {}); upgrade drydock",
                path.display(),
                schema::SCHEMA_VERSION
            )));
        }
        Ok(Self {
            conn,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Records in the journal's event stream that instance `id` entered
    /// `state` (after the change is committed here). A journal that
    /// cannot be written loses the event, with a warning: the change
    /// itself stands.
    pub(crate) fn state_event(&self, id: &str, state: &str, reason: &str) {
        let region: Option<String> = self
            .conn
            .query_row("SELECT region FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .ok();
        let detail = if reason.is_empty() {
            format!("{id} is {state}")
        } else {
            format!("{id} is {state} ({reason})")
        };
        let r = drydock_runtime::Journal::open(&self.data_dir).and_then(|j| {
            j.emit(&drydock_runtime::journal::stream::NewStreamEvent {
                kind: drydock_runtime::journal::stream::kind::INSTANCE_STATE,
                instance: Some(id),
                region: region.as_deref(),
                detail: &detail,
                data: serde_json::json!({ "state": state, "reason": reason }),
                ..Default::default()
            })
        });
        if let Err(e) = r {
            tracing::warn!(instance = %id, "the event `{detail}` was not recorded: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_a_newer_drydock_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        drop(HostStore::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join("host.sqlite3")).unwrap();
        c.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 3)
            .unwrap();
        drop(c);
        let e = HostStore::open(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("newer drydock") && e.contains("upgrade drydock"),
            "{e}"
        );
    }
}
