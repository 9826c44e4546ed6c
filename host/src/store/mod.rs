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
mod outbox;
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
pub(crate) use outbox::queue_state_event;
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
    /// stream (through the outbox, [`outbox`]).
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
