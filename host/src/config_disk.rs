//! The per-instance config disk, NoCloud style: a small read-only ext4
//! volume labelled `cidata` with meta-data, the root password hash,
//! authorized keys, the network settings and a user-data script. It is also the instance's
//! metadata (the guest copies meta-data to /run/drydock/meta-data).

use std::path::Path;

use super::store::InstanceRecord;
use super::HostError;

/// Writes the config disk of `instance` to `out`, with its primary
/// interface's settings (`network`: `NET_MAC`, `NET_ADDRESS`,
/// `NET_GATEWAY` lines) when it has one.
pub fn write_config_disk(
    instance: &InstanceRecord,
    network: Option<&str>,
    out: &Path,
) -> Result<(), HostError> {
    let tree = tempfile::tempdir()
        .map_err(|e| HostError::io("create a temporary directory for", out, e))?;
    let put = |name: &str, text: &str| {
        let p = tree.path().join(name);
        std::fs::write(&p, text).map_err(|e| HostError::io("write", &p, e))
    };
    let c = &instance.config;
    put(
        "meta-data",
        &format!(
            "instance-id: {}\nregion: {}\ninstance-type: {}\nimage-id: {}\nlocal-hostname: {}\n",
            instance.id, instance.region, instance.instance_type, instance.image_id, c.hostname
        ),
    )?;
    if let Some(hash) = &c.root_password_hash {
        put("root-password-hash", hash)?;
    }
    if !c.authorized_keys.is_empty() {
        put("authorized_keys", &(c.authorized_keys.join("\n") + "\n"))?;
    }
    if let Some(network) = network {
        put("network", network)?;
    }
    if let Some(script) = &c.user_data {
        put("user-data", script)?;
    }
    let tmp = out.with_extension("tmp");
    drydock_images::make_ext4(tree.path(), "cidata", 4, &tmp)?;
    std::fs::rename(&tmp, out).map_err(|e| HostError::io("move into place", out, e))
}
