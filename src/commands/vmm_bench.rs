//! `drydock vmm-bench`: drydock's VMM and QEMU's microvm side by side on the
//! same kernel, initramfs and memory. For each run: wall time from starting
//! the VMM process to the guest's init printing a marker on the serial
//! console, the VMM process's resident memory beyond guest RAM at that
//! moment, and (drydock) the time from process start to the guest's first
//! instruction. Meant for a hardware-style /dev/kvm (the nested lab:
//! benches/nested-lab/vmm-figures.sh).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::Context;
use crate::failure::CliError;

/// What the bench's init prints (busybox echo as init, see `cmdline`).
const MARKER: &str = "DRYDOCK-BENCH-INIT";

#[derive(Debug, clap::Args)]
pub struct VmmBenchArgs {
    /// Kernel (ELF vmlinux with a PVH note, so both VMMs boot it directly)
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs with /bin/busybox
    #[arg(long)]
    initrd: PathBuf,
    #[arg(long, default_value_t = 256)]
    memory_mib: u32,
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// QEMU binary to compare with ("" to skip QEMU)
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: String,
}

struct Sample {
    boot_ms: f64,
    overhead_kib: u64,
    anon_overhead_kib: u64,
    first_entry_ms: Option<f64>,
}

fn cmdline() -> String {
    format!("console=ttyS0 quiet panic=-1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd rdinit=/bin/busybox -- echo {MARKER}")
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Memory of `pid` outside its guest-RAM mapping (the one anonymous
/// mapping of exactly the guest's size), in KiB: all resident pages
/// (including the shared pages of its binary and libraries), and the
/// anonymous pages only (what each further VM costs).
fn overhead_kib(pid: u32, guest_bytes: u64) -> Result<(u64, u64), String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| format!("cannot read smaps of {pid}: {e}"))?;
    let (mut rss, mut anon, mut current_is_guest) = (0u64, 0u64, false);
    let kib = |rest: &str| -> u64 {
        rest.trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let mut range = first.split('-');
            let lo = u64::from_str_radix(range.next().unwrap_or("0"), 16).unwrap_or(0);
            let hi = u64::from_str_radix(range.next().unwrap_or("0"), 16).unwrap_or(0);
            current_is_guest = hi - lo == guest_bytes;
        } else if current_is_guest {
            continue;
        } else if let Some(rest) = line.strip_prefix("Rss:") {
            rss += kib(rest);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            anon += kib(rest);
        }
    }
    Ok((rss, anon))
}

/// Waits for the marker on the child's stdout; returns when it was seen.
fn wait_marker(child: &mut Child, timeout: Duration) -> Result<Instant, String> {
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                let _ = tx.send(Instant::now());
                // Keep draining so the guest never blocks on its console.
                while matches!(out.read(&mut buf), Ok(n) if n > 0) {}
                return;
            }
        }
    });
    rx.recv_timeout(timeout)
        .map_err(|_| format!("the guest did not print {MARKER} within {timeout:?}"))
}

fn drydock_run(args: &VmmBenchArgs, dir: &Path) -> Result<Sample, String> {
    let control = dir.join("c.sock");
    let spec = json!({
        "name": "bench", "vcpus": 1, "memory_mib": args.memory_mib, "generation": "mmio",
        "accel": "kvm", "kernel": args.kernel, "initramfs": args.initrd, "cmdline": cmdline(),
        "disks": [], "control_socket": control, "event_socket": dir.join("e.sock"),
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).map_err(|e| e.to_string())?;
    let exe = drydock_host::backend::VmmPrograms::from_env().drydock_vmm;
    let start_us = unix_us();
    let start = Instant::now();
    let mut child = Command::new(exe)
        .arg("--spec")
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let seen = wait_marker(&mut child, Duration::from_secs(120))?;
        let overhead = overhead_kib(child.id(), u64::from(args.memory_mib) << 20)?;
        let mut qmp =
            drydock_host::backend::qmp::QmpClient::connect(&control, Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
        let status = qmp
            .execute("status", json!({}))
            .map_err(|e| e.to_string())?;
        let first = status["first_entry_unix_us"].as_u64().unwrap_or(0);
        let _ = qmp.execute("stop", json!({}));
        Ok(Sample {
            boot_ms: (seen - start).as_secs_f64() * 1e3,
            overhead_kib: overhead.0,
            anon_overhead_kib: overhead.1,
            first_entry_ms: (first > start_us).then(|| (first - start_us) as f64 / 1e3),
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn qemu_run(args: &VmmBenchArgs) -> Result<Sample, String> {
    let start = Instant::now();
    let mut child = Command::new(&args.qemu)
        .args([
            "-M",
            "microvm,acpi=on",
            "-enable-kvm",
            "-cpu",
            "host",
            "-smp",
            "1",
        ])
        .args(["-m", &format!("{}M", args.memory_mib)])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&args.kernel)
        .arg("-initrd")
        .arg(&args.initrd)
        .args(["-append", &cmdline()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.qemu))?;
    let result = (|| {
        let seen = wait_marker(&mut child, Duration::from_secs(120))?;
        let overhead = overhead_kib(child.id(), u64::from(args.memory_mib) << 20)?;
        Ok(Sample {
            boot_ms: (seen - start).as_secs_f64() * 1e3,
            overhead_kib: overhead.0,
            anon_overhead_kib: overhead.1,
            first_entry_ms: None,
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// One measured boot of one VMM.
type SampleRun<'a> = dyn Fn() -> Result<Sample, String> + 'a;

/// A scratch directory removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(ctx: &Context, args: VmmBenchArgs) -> Result<i32, CliError> {
    for p in [&args.kernel, &args.initrd] {
        if !p.exists() {
            return Err(CliError::usage(format!("{} does not exist", p.display())));
        }
    }
    let dir =
        TempDir(std::env::temp_dir().join(format!("drydock-vmm-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.0.display())))?;
    let mut rows = Vec::new();
    let mut vmms: Vec<(&str, Box<SampleRun>)> =
        vec![("drydock", Box::new(|| drydock_run(&args, &dir.0)))];
    if !args.qemu.is_empty() {
        vmms.push(("qemu-microvm", Box::new(|| qemu_run(&args))));
    }
    // Interleaved runs, so both see the same machine conditions.
    let mut samples: Vec<Vec<Sample>> = vmms.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.runs {
        for (i, (name, f)) in vmms.iter().enumerate() {
            let s = f().map_err(|e| CliError::failure(format!("{name}: {e}")))?;
            samples[i].push(s);
        }
    }
    for ((name, _), s) in vmms.iter().zip(samples) {
        let boot = median(s.iter().map(|x| x.boot_ms).collect());
        let overhead = median(s.iter().map(|x| x.overhead_kib as f64).collect());
        let anon = median(s.iter().map(|x| x.anon_overhead_kib as f64).collect());
        let first: Vec<f64> = s.iter().filter_map(|x| x.first_entry_ms).collect();
        rows.push(json!({
            "vmm": name, "runs": s.len(), "boot_to_init_ms_median": boot,
            "boot_to_init_ms": s.iter().map(|x| x.boot_ms).collect::<Vec<_>>(),
            "overhead_kib_median": overhead,
            "anon_overhead_kib_median": anon,
            "start_to_first_instruction_ms_median": (!first.is_empty()).then(|| median(first)),
        }));
    }
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON"));
    } else {
        println!(
            "{:<14} {:>5} {:>18} {:>24} {:>25} {:>26}",
            "VMM",
            "RUNS",
            "BOOT TO INIT (ms)",
            "RSS BEYOND GUEST (KiB)",
            "ANON BEYOND GUEST (KiB)",
            "START TO 1ST INSTR (ms)"
        );
        for r in &rows {
            println!(
                "{:<14} {:>5} {:>18.1} {:>24.0} {:>25.0} {:>26}",
                r["vmm"].as_str().unwrap_or(""),
                r["runs"],
                r["boot_to_init_ms_median"].as_f64().unwrap_or(f64::NAN),
                r["overhead_kib_median"].as_f64().unwrap_or(f64::NAN),
                r["anon_overhead_kib_median"].as_f64().unwrap_or(f64::NAN),
                r["start_to_first_instruction_ms_median"]
                    .as_f64()
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    Ok(0)
}
