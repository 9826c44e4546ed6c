//! The host database's schema and its versions. Each migration runs once,
//! in order, inside the transaction that opens the database, and the
//! database records the version it reached (`PRAGMA user_version`), as the
//! journal does. A database written by a newer drydock is refused, not
//! guessed at.

use rusqlite::Connection;

/// Migrations by version: migration `i` brings a database from version
/// `i` to `i + 1`. Append only; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: instances, volumes, snapshots, images, tags.
    r#"CREATE TABLE instances (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, instance_type TEXT NOT NULL, image_id TEXT NOT NULL,
    state TEXT NOT NULL, state_reason TEXT NOT NULL DEFAULT '', root_volume TEXT NOT NULL,
    supervisor_pid INTEGER, supervisor_token TEXT, boots INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL, created_at INTEGER NOT NULL, state_since INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE volumes (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, size_mib INTEGER NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL, attached_to TEXT, attach_index INTEGER,
    delete_on_termination INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL
);
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, volume_id TEXT NOT NULL, size_mib INTEGER NOT NULL,
    path TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE images (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, name TEXT NOT NULL, boot_dir TEXT NOT NULL,
    root_template TEXT NOT NULL, drivers TEXT NOT NULL, created_at INTEGER NOT NULL,
    owner TEXT NOT NULL, public INTEGER NOT NULL DEFAULT 0, shared_with TEXT NOT NULL DEFAULT '[]',
    owns_root INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE tags (
    kind TEXT NOT NULL, resource TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (resource, key)
);
"#,
    // 2: client tokens (idempotent creates).
    r#"
CREATE TABLE client_tokens (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, resource TEXT NOT NULL,
    request_sha256 TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}',
    execution TEXT, step_path TEXT, created_at INTEGER NOT NULL
);
CREATE INDEX client_tokens_resource ON client_tokens (resource);
"#,
    // 3: who runs an instance's current operation (`pid:token`).
    "ALTER TABLE instances ADD COLUMN op_owner TEXT;",
    // 4: what becomes of a running instance after a host failure.
    "ALTER TABLE instances ADD COLUMN after_host_failure TEXT NOT NULL DEFAULT 'stop';",
    // 5: faults injected into instances, with their undo.
    r#"
CREATE TABLE faults (
    id TEXT PRIMARY KEY, instance TEXT NOT NULL, fault TEXT NOT NULL, detail TEXT NOT NULL,
    undo TEXT NOT NULL, injected_by TEXT NOT NULL, injected_at INTEGER NOT NULL,
    reverted_at INTEGER, client_token TEXT
);
"#,
    // 6: VPCs, subnets and instances' network interfaces.
    r#"
CREATE TABLE vpcs (
    id TEXT PRIMARY KEY, region TEXT NOT NULL, cidr TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL
);
CREATE TABLE subnets (
    id TEXT PRIMARY KEY, vpc_id TEXT NOT NULL, region TEXT NOT NULL, cidr TEXT NOT NULL,
    kind TEXT NOT NULL, is_default INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL
);
CREATE TABLE network_interfaces (
    id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, subnet_id TEXT NOT NULL, vpc_id TEXT NOT NULL,
    device_index INTEGER NOT NULL, private_ip TEXT NOT NULL, mac TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (subnet_id, private_ip), UNIQUE (instance_id, device_index)
);
"#,
    // 7: security groups, their rules, and which interfaces are in them.
    r#"
CREATE TABLE security_groups (
    id TEXT PRIMARY KEY, vpc_id TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '', is_default INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, UNIQUE (vpc_id, name)
);
CREATE TABLE security_group_rules (
    id TEXT PRIMARY KEY, group_id TEXT NOT NULL, direction TEXT NOT NULL, protocol TEXT NOT NULL,
    port_from INTEGER, port_to INTEGER, cidr TEXT, source_group TEXT, created_at INTEGER NOT NULL
);
CREATE TABLE interface_groups (
    interface_id TEXT NOT NULL, group_id TEXT NOT NULL, PRIMARY KEY (interface_id, group_id)
);
"#,
    // 8: a VPC's way out (the network namespace its public subnets reach
    // through NAT).
    "ALTER TABLE vpcs ADD COLUMN uplink TEXT;",
    // 9: which instance first announced an SSH host key on its console.
    r#"
CREATE TABLE announced_host_keys (
    key TEXT PRIMARY KEY, instance_id TEXT NOT NULL, first_seen INTEGER NOT NULL
);
"#,
    // 10: status checks (the last verdict of each instance), automatic
    // recovery (per instance, and the recoveries made).
    r#"
ALTER TABLE instances ADD COLUMN auto_recovery INTEGER NOT NULL DEFAULT 0;
CREATE TABLE instance_status (
    instance_id TEXT PRIMARY KEY, status TEXT NOT NULL, system TEXT NOT NULL,
    system_reason TEXT NOT NULL, guest TEXT NOT NULL, guest_reason TEXT NOT NULL,
    since INTEGER NOT NULL, checked_at INTEGER NOT NULL
);
CREATE TABLE instance_recoveries (
    instance_id TEXT NOT NULL, at INTEGER NOT NULL, outcome TEXT NOT NULL
);
CREATE INDEX instance_recoveries_by_instance ON instance_recoveries(instance_id, at);
"#,
    // 11: the outbox of events bound for the journal's event stream,
    // written with the changes they report.
    r#"
CREATE TABLE event_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL,
    instance TEXT, region TEXT, detail TEXT NOT NULL, data TEXT NOT NULL
);
"#,
    // 12: network interfaces of their own (created, attached, detached,
    // deleted): an interface need not belong to an instance.
    r#"
CREATE TABLE network_interfaces_12 (
    id TEXT PRIMARY KEY, instance_id TEXT, subnet_id TEXT NOT NULL, vpc_id TEXT NOT NULL,
    device_index INTEGER NOT NULL, private_ip TEXT NOT NULL, mac TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (subnet_id, private_ip), UNIQUE (instance_id, device_index)
);
INSERT INTO network_interfaces_12
    SELECT id, instance_id, subnet_id, vpc_id, device_index, private_ip, mac, created_at
    FROM network_interfaces;
DROP TABLE network_interfaces;
ALTER TABLE network_interfaces_12 RENAME TO network_interfaces;
"#,
];

/// The version this drydock writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`]. Returns the version found
/// when it is newer than this drydock knows (the database is left alone).
pub(super) fn migrate(c: &Connection) -> rusqlite::Result<Option<i64>> {
    let mut version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Some(version));
    }
    if version == 0 && has_table(c, "instances")? {
        version = adopt_unversioned(c)?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        c.execute_batch(sql)?;
        c.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    Ok(None)
}

/// The version an unversioned database is brought to by
/// [`adopt_unversioned`]: what drydock had when versions began.
const UNVERSIONED_ADOPTED_AS: i64 = 5;

/// A database from before the host schema had versions (it grew tables
/// and columns as they were first used): whatever of versions 1 to 5 it
/// lacks is added, and it is marked as version 5.
fn adopt_unversioned(c: &Connection) -> rusqlite::Result<i64> {
    for (table, migration) in [("client_tokens", 1), ("faults", 4)] {
        if !has_table(c, table)? {
            c.execute_batch(MIGRATIONS[migration])?;
        }
    }
    for (table, column, migration) in [
        ("instances", "op_owner", 2),
        ("instances", "after_host_failure", 3),
    ] {
        if !has_column(c, table, column)? {
            c.execute_batch(MIGRATIONS[migration])?;
        }
    }
    if !has_column(c, "faults", "client_token")? {
        c.execute_batch("ALTER TABLE faults ADD COLUMN client_token TEXT;")?;
    }
    c.pragma_update(None, "user_version", UNVERSIONED_ADOPTED_AS)?;
    Ok(UNVERSIONED_ADOPTED_AS)
}

fn has_table(c: &Connection, table: &str) -> rusqlite::Result<bool> {
    c.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([table])
}

fn has_column(c: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    c.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(c: &Connection, table: &str) -> Vec<String> {
        let mut stmt = c.prepare("SELECT name FROM pragma_table_info(?1)").unwrap();
        let rows = stmt.query_map([table], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn version(c: &Connection) -> i64 {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_every_table_at_the_current_version() {
        let c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&c).unwrap(), None);
        assert_eq!(version(&c), SCHEMA_VERSION);
        for t in [
            "instances",
            "volumes",
            "snapshots",
            "images",
            "tags",
            "client_tokens",
            "faults",
        ] {
            assert!(has_table(&c, t).unwrap(), "{t}");
        }
        assert!(columns(&c, "instances").contains(&"after_host_failure".to_string()));
        // Opening again changes nothing.
        assert_eq!(migrate(&c).unwrap(), None);
        assert_eq!(version(&c), SCHEMA_VERSION);
    }

    #[test]
    fn each_version_migrates_to_the_current_one_keeping_its_rows() {
        for from in 1..SCHEMA_VERSION {
            let c = Connection::open_in_memory().unwrap();
            for sql in &MIGRATIONS[..from as usize] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", from).unwrap();
            c.execute(
                "INSERT INTO volumes (id, region, size_mib, kind, path, created_at)
                 VALUES ('vol-1', 'region-a', 8, 'network', '/v', 1)",
                [],
            )
            .unwrap();
            migrate(&c).unwrap();
            assert_eq!(version(&c), SCHEMA_VERSION, "from {from}");
            let n: i64 = c
                .query_row("SELECT count(*) FROM volumes", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 1, "from {from}");
            assert!(columns(&c, "faults").contains(&"client_token".to_string()));
        }
    }

    #[test]
    fn an_unversioned_database_is_adopted_with_what_it_lacks() {
        let c = Connection::open_in_memory().unwrap();
        // As drydock made it before versions: tables of version 1, one
        // later column, a faults table without its client token.
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.execute_batch(MIGRATIONS[2]).unwrap();
        c.execute_batch(
            "CREATE TABLE faults (id TEXT PRIMARY KEY, instance TEXT NOT NULL, fault TEXT NOT NULL,
                 detail TEXT NOT NULL, undo TEXT NOT NULL, injected_by TEXT NOT NULL,
                 injected_at INTEGER NOT NULL, reverted_at INTEGER);
             INSERT INTO faults VALUES ('f-1', 'i-1', 'fstab', '', '{}', 'alice', 1, NULL);",
        )
        .unwrap();
        migrate(&c).unwrap();
        assert_eq!(version(&c), SCHEMA_VERSION);
        assert!(has_table(&c, "client_tokens").unwrap());
        assert!(columns(&c, "instances").contains(&"after_host_failure".to_string()));
        assert!(columns(&c, "faults").contains(&"client_token".to_string()));
        let n: i64 = c
            .query_row("SELECT count(*) FROM faults", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_newer_database_is_left_alone() {
        let c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert_eq!(migrate(&c).unwrap(), Some(SCHEMA_VERSION + 1));
        assert!(!has_table(&c, "instances").unwrap());
    }
}
