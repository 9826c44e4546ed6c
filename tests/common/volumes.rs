//! Volumes: made, listed, found and read on the host.

use std::path::PathBuf;

use serde_json::Value;

use super::{assert_code, Drydock};

impl Drydock {
    /// Every volume `drydock volumes` lists in `region`.
    pub fn volumes(&self, region: &str) -> Vec<Value> {
        self.json(&["--region", region, "volumes"])["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The volume `id` as listed, or null when it is not.
    pub fn volume(&self, region: &str, id: &str) -> Value {
        self.volumes(region)
            .into_iter()
            .find(|v| v["id"] == id)
            .unwrap_or(Value::Null)
    }

    /// `drydock volume create <args…>`, which must succeed; its id.
    pub fn create_volume(&self, region: &str, args: &[&str]) -> String {
        let mut full = vec!["--json", "--region", region, "volume", "create"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        assert_code(&out, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("volume create {args:?} gave no id: {v}"))
            .to_string()
    }

    /// The file on the host that holds an instance's root volume.
    pub fn root_volume_path(&self, region: &str, id: &str) -> PathBuf {
        let root = self.root_volume(region, id);
        let v = self.volume(region, &root);
        PathBuf::from(
            v["path"]
                .as_str()
                .unwrap_or_else(|| panic!("root volume {root} of {id} has no path: {v}")),
        )
    }
}
