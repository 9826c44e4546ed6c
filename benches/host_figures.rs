//! Host figures, printed side by side: boot to the login prompt per
//! instance type (QEMU backend, accelerator chosen by probing) at launch
//! and at a later start (both boot what the root volume holds: the boot
//! configuration, kernel and initrd read out of the ext4 volume at every
//! start), what reading those boot files costs (first read, which
//! extracts the PVH kernel, and a cached one), graceful stop, and a
//! snapshot of a 4 GiB volume with 100 MiB written.
//!
//! Run with `cargo bench --bench host_figures` (needs QEMU and apt, like
//! the tests: `scripts/setup` installs them).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Bench {
    data: tempfile::TempDir,
    cache: PathBuf,
}

impl Bench {
    fn drydock(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_drydock"))
            .arg("--json")
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env("DRYDOCK_IMAGE_CACHE", &self.cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn console(&self, id: &str, boot: u32) -> PathBuf {
        self.data
            .path()
            .join("instances")
            .join(id)
            .join(format!("console/boot-{boot:04}.log"))
    }
}

fn wait_for(path: &Path, pattern: &str) {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(pattern)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {pattern:?} in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let b = Bench {
        data: tempfile::tempdir().unwrap(),
        cache: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-images"),
    };
    let built = b.drydock(&["image", "build"]);
    let image = built["image"]["id"].as_str().unwrap().to_string();
    let root = PathBuf::from(built["image"]["boot_dir"].as_str().unwrap()).join("root.ext4");
    println!(
        "drydock host figures (accelerator: {:?}, median of 3)",
        drydock_host::backend::choose_accel()
    );
    println!("{:<52} {:>10}", "measure", "value");
    let (mut cold, mut hot) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let cache = tempfile::tempdir().unwrap();
        let read = || {
            let start = Instant::now();
            drydock_images::boot_volume::read_boot(
                &root,
                cache.path(),
                drydock_images::boot_volume::KernelBoot::PreferPvh,
                None,
                &drydock_images::boot_volume::BootMemo::default(),
            )
            .unwrap();
            start.elapsed()
        };
        cold.push(read());
        hot.push(read());
    }
    println!(
        "{:<52} {:>7.3} s",
        "boot files from the root volume, first read",
        median(cold).as_secs_f64()
    );
    println!(
        "{:<52} {:>7.3} s",
        "boot files from the root volume, cached (read, hashed)",
        median(hot).as_secs_f64()
    );
    for itype in ["m1.small", "n2.small"] {
        let (mut boots, mut starts, mut stops) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let start = Instant::now();
            let id = b.drydock(&["instance", "launch", "--image", &image, "--type", itype])["id"]
                .as_str()
                .unwrap()
                .to_string();
            wait_for(&b.console(&id, 1), "login:");
            boots.push(start.elapsed());
            let start = Instant::now();
            b.drydock(&["instance", "stop", &id]);
            stops.push(start.elapsed());
            let start = Instant::now();
            b.drydock(&["instance", "start", &id]);
            wait_for(&b.console(&id, 2), "login:");
            starts.push(start.elapsed());
            b.drydock(&["instance", "stop", &id]);
            b.drydock(&["instance", "terminate", &id]);
        }
        println!(
            "{:<52} {:>7.2} s",
            format!("launch to login prompt, {itype}"),
            median(boots).as_secs_f64()
        );
        println!(
            "{:<52} {:>7.2} s",
            format!("start (stopped) to login prompt, {itype}"),
            median(starts).as_secs_f64()
        );
        println!(
            "{:<52} {:>7.2} s",
            format!("graceful stop (sync, power off), {itype}"),
            median(stops).as_secs_f64()
        );
    }
    let vol = b.drydock(&["volume", "create", "--size", "4096"]);
    let path = vol["path"].as_str().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..100u64 {
        f.write_all_at(&chunk, i * (40 << 20)).unwrap();
    }
    f.sync_all().unwrap();
    let mut snaps = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        b.drydock(&["snapshot", "create", vol["id"].as_str().unwrap()]);
        snaps.push(start.elapsed());
    }
    println!(
        "{:<52} {:>7.3} s",
        "snapshot, 4 GiB volume with 100 MiB written",
        median(snaps).as_secs_f64()
    );
}
