//! Guest images built from real Debian packages: the cloud kernel, an
//! initramfs that loads the image's drivers and finds the root volume, and
//! an ext4 root volume with busybox userland that holds what it boots —
//! `/boot/vmlinuz-RELEASE`, `/boot/initrd.img-RELEASE` (and `.old`), the
//! modules under `/lib/modules/RELEASE/`, `/boot/extlinux/extlinux.conf` —
//! and the in-guest `update-initramfs` and `lsinitramfs`. Builds are
//! cached by package versions and recipe.

pub mod boot_config;
pub mod boot_volume;
pub mod cpio;
pub mod driver_pack;
pub mod kernel;
mod modules;
pub mod packages;
mod rootfs;
pub mod ssh_server;
pub mod vmlinux;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use cpio::{CpioWriter, EntryKind};
pub use rootfs::{extlinux_conf, make_ext4, DEFAULT_APPEND};

pub use kernel::KernelFeatures;
use packages::PackageVersion;

/// Errors building an image, named for what failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} failed: {detail}")]
    Tool { what: String, detail: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Recipe(String),
}

impl ImageError {
    pub(crate) fn io(what: &str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The kernel meta package the images follow.
/// Where image builds (and their package cache, `packages/`) live for a
/// data directory: `DRYDOCK_IMAGE_CACHE`, else DATA_DIR/images. Builds may
/// be shared between data directories (tests, several profiles).
pub fn images_dir(data_dir: &Path) -> PathBuf {
    std::env::var_os("DRYDOCK_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("images"))
}

pub const KERNEL_META: &str = "linux-image-cloud-amd64";
/// Where busybox comes from.
pub const BUSYBOX: &str = "busybox-static";
/// Drivers every default image carries: both device generations.
pub const DEFAULT_DRIVERS: &[&str] = &["virtio_mmio", "virtio_pci", "virtio_blk"];

/// The network driver an image carries on its root volume (with what it
/// needs), loaded by the guest's network service — not by the initramfs:
/// a guest without it still boots, without a network.
pub const NIC_DRIVERS: &[&str] = &["virtio_net"];

/// Bumped when the layout or guest scripts change meaning (4: the root
/// volume holds the kernel, modules, initramfs and boot configuration; 5:
/// the build leaves a memo of them, boot-memo.json; 6: services in
/// /etc/init.d and the `service` command; 7: the network service and the
/// NIC driver on the root volume; 8: the SSH server; 9: directory modes
/// set whatever the builder's umask; 10: interfaces besides the
/// primary one configured from the metadata service).
const LAYOUT_VERSION: u32 = 10;

/// What to build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecipe {
    /// Kernel modules the initramfs loads, e.g. `virtio_mmio`, `virtio_blk`.
    pub drivers: Vec<String>,
    /// Size of the root volume in MiB.
    pub root_size_mib: u64,
    /// A kernel of the operator's own (bzImage or ELF `vmlinux`) with the
    /// virtio drivers built in, instead of Debian's cloud kernel; the
    /// initramfs then loads no modules and `drivers` must be empty.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
}

impl Default for ImageRecipe {
    fn default() -> Self {
        Self {
            drivers: DEFAULT_DRIVERS.iter().map(|s| s.to_string()).collect(),
            root_size_mib: 256,
            kernel: None,
        }
    }
}

/// What a built image is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageManifest {
    pub key: String,
    pub kernel: PackageVersion,
    pub kernel_release: String,
    pub busybox: PackageVersion,
    pub recipe: ImageRecipe,
    /// Drivers in load order, dependencies included.
    pub load_order: Vec<String>,
    /// What the kernel supports, from its build configuration.
    #[serde(default)]
    pub features: KernelFeatures,
    /// The root volume holds what the instance boots (layout 4 on); an
    /// image built before boots the host-side files of its build.
    #[serde(default)]
    pub boot_from_volume: bool,
}

/// A built image on disk.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub dir: PathBuf,
    pub manifest: ImageManifest,
    /// Whether it came from the cache.
    pub cached: bool,
}

impl BuiltImage {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    /// The uncompressed ELF kernel (PVH entry), when it could be extracted.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root.ext4")
    }

    /// Loads a built image from its directory.
    pub fn open(dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ImageError::io("read", &path, e))?;
        let manifest = serde_json::from_str(&text)
            .map_err(|e| ImageError::Recipe(format!("{} is damaged: {e}", path.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            cached: true,
        })
    }
}

const INITRAMFS_INIT: &str = include_str!("guest/initramfs-init.sh");

/// The first 8 bytes of a SHA-256, in hex.
fn short_hex(hash: &[u8]) -> String {
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn digest(bytes: &[u8]) -> String {
    short_hex(&Sha256::digest(bytes))
}

fn cache_key(
    kernel: &PackageVersion,
    busybox: &PackageVersion,
    ssh: &[PackageVersion],
    recipe: &ImageRecipe,
) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{LAYOUT_VERSION}\n{kernel:?}\n{busybox:?}\n{ssh:?}\n{recipe:?}\n"
    ));
    h.update(rootfs::NETWORK);
    h.update(rootfs::SSHD);
    h.update(INITRAMFS_INIT);
    h.update(include_str!("guest/rcS.sh"));
    h.update(rootfs::UPDATE_INITRAMFS);
    h.update(rootfs::LSINITRAMFS);
    h.update(rootfs::SERVICE);
    h.update(rootfs::SYSLOGD);
    short_hex(&h.finalize())
}

/// Where the image's kernel comes from.
enum KernelSource {
    /// Debian's cloud kernel package.
    Debian(PackageVersion),
    /// The operator's own file, read.
    Own { path: PathBuf, bytes: Vec<u8> },
}

impl KernelSource {
    fn for_recipe(recipe: &ImageRecipe) -> Result<Self, ImageError> {
        match &recipe.kernel {
            None => {
                if recipe.drivers.is_empty() {
                    return Err(ImageError::Recipe(
                        "an image needs at least one driver (e.g. virtio_blk)".into(),
                    ));
                }
                Ok(Self::Debian(packages::resolve(&packages::resolve_meta(
                    KERNEL_META,
                )?)?))
            }
            Some(path) => {
                if !recipe.drivers.is_empty() {
                    return Err(ImageError::Recipe(format!(
                        "drivers ({}) are loaded as modules of Debian's kernel; a kernel of your own ({}) must have them built in: drop the drivers",
                        recipe.drivers.join(","),
                        path.display()
                    )));
                }
                let bytes = std::fs::read(path).map_err(|e| ImageError::io("read", path, e))?;
                Ok(Self::Own {
                    path: path.clone(),
                    bytes,
                })
            }
        }
    }

    /// How the kernel shows in the manifest and the cache key.
    fn version(&self) -> PackageVersion {
        match self {
            Self::Debian(p) => p.clone(),
            Self::Own { path, bytes } => PackageVersion {
                name: format!("own kernel {}", path.display()),
                version: format!("sha256:{}", digest(bytes)),
            },
        }
    }
}

/// The kernel files staged into an image, and what the kernel is.
struct StagedKernel {
    release: String,
    features: KernelFeatures,
    /// Driver modules by name (empty for a kernel of one's own).
    modules: std::collections::BTreeMap<String, PathBuf>,
    /// Where they are (`lib/modules/RELEASE` of the package).
    modules_dir: Option<PathBuf>,
}

fn stage_debian_kernel(
    package: &PackageVersion,
    cache: &Path,
    staged: &Path,
    progress: &dyn Fn(&str),
) -> Result<StagedKernel, ImageError> {
    progress(&format!("fetching {} {}", package.name, package.version));
    let kernel_tree = packages::fetch(package, cache)?;
    let (vmlinuz, release) = find_kernel(&kernel_tree)?;
    let bz = std::fs::read(&vmlinuz).map_err(|e| ImageError::io("read", &vmlinuz, e))?;
    // Written, not copied: a copy would keep the package's 0644.
    std::fs::write(staged.join("vmlinuz"), &bz)
        .map_err(|e| ImageError::io("write", &staged.join("vmlinuz"), e))?;
    progress("extracting the uncompressed kernel (PVH boot)");
    match vmlinux::extract(&bz) {
        Ok(elf) => std::fs::write(staged.join("vmlinux"), elf)
            .map_err(|e| ImageError::io("write", &staged.join("vmlinux"), e))?,
        Err(e) => tracing::warn!("booting the compressed kernel: {e}"),
    }
    let config_path = kernel_tree.join("boot").join(format!("config-{release}"));
    let features = match std::fs::read_to_string(&config_path) {
        Ok(text) => KernelFeatures::from_config(&text),
        Err(e) => {
            tracing::warn!(
                "{}: {e}; assuming no optional features",
                config_path.display()
            );
            KernelFeatures::default()
        }
    };
    let modules_dir = kernel_tree.join("lib/modules").join(&release);
    let modules = modules::index(&modules_dir)
        .map_err(|e| ImageError::io("read modules in", &modules_dir, e))?;
    Ok(StagedKernel {
        release,
        features,
        modules,
        modules_dir: Some(modules_dir),
    })
}

fn stage_own_kernel(
    path: &Path,
    bytes: &[u8],
    staged: &Path,
    progress: &dyn Fn(&str),
) -> Result<StagedKernel, ImageError> {
    let write = |name: &str, data: &[u8]| {
        std::fs::write(staged.join(name), data)
            .map_err(|e| ImageError::io("write", &staged.join(name), e))
    };
    // Booted as given: a bzImage through its own decompressor (the 64-bit
    // entry), an ELF through its PVH entry. The uncompressed kernel of an
    // LZ4 bzImage is looked at only for its configuration.
    let (release, elf) = if kernel::is_bzimage(bytes) {
        write("vmlinuz", bytes)?;
        (kernel::bzimage_release(bytes), vmlinux::extract(bytes).ok())
    } else if bytes.starts_with(b"\x7fELF") {
        write("vmlinux", bytes)?;
        (kernel::elf_release(bytes), Some(bytes.to_vec()))
    } else {
        return Err(ImageError::Recipe(format!(
            "{} is neither a bzImage nor an ELF vmlinux; give the kernel build's arch/x86/boot/bzImage or vmlinux",
            path.display()
        )));
    };
    let release = release.unwrap_or_else(|| "unknown".into());
    let features = match elf.as_deref().and_then(kernel::embedded_config) {
        Some(config) => {
            let features = KernelFeatures::from_config(&config);
            if let Some(why) = features.unusable() {
                return Err(ImageError::Recipe(format!(
                    "kernel {release} ({}) cannot boot as an instance: {why}; see images/src/guest/minimal-kernel.config",
                    path.display()
                )));
            }
            features
        }
        None => {
            progress("the kernel carries no configuration (CONFIG_IKCONFIG): assuming ACPI and built-in virtio drivers");
            KernelFeatures {
                builtin_virtio: true,
                ..KernelFeatures::default()
            }
        }
    };
    Ok(StagedKernel {
        release,
        features,
        modules: Default::default(),
        modules_dir: None,
    })
}

/// Builds (or finds in the cache) an image under `images_dir`.
pub fn build(
    images_dir: &Path,
    recipe: &ImageRecipe,
    progress: &dyn Fn(&str),
) -> Result<BuiltImage, ImageError> {
    let cache = images_dir.join("packages");
    std::fs::create_dir_all(&cache).map_err(|e| ImageError::io("create", &cache, e))?;
    progress("resolving package versions");
    packages::ensure_package_lists(BUSYBOX)?;
    let source = KernelSource::for_recipe(recipe)?;
    let kernel_version = source.version();
    let busybox = packages::resolve(BUSYBOX)?;
    let ssh = ssh_server::resolve()?;
    let key = cache_key(&kernel_version, &busybox, &ssh, recipe);
    let dir = images_dir.join(format!("build-{key}"));
    if dir.join("manifest.json").exists() {
        return BuiltImage::open(&dir);
    }
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(images_dir)
        .map_err(|e| ImageError::io("create a build directory in", images_dir, e))?;
    let staged = work.path().join("image");
    std::fs::create_dir_all(&staged).map_err(|e| ImageError::io("create", &staged, e))?;
    let kernel = match &source {
        KernelSource::Debian(package) => stage_debian_kernel(package, &cache, &staged, progress)?,
        KernelSource::Own { path, bytes } => stage_own_kernel(path, bytes, &staged, progress)?,
    };
    progress(&format!("fetching {} {}", busybox.name, busybox.version));
    let busybox_tree = packages::fetch(&busybox, &cache)?;
    let busybox_bin = busybox_tree.join("bin/busybox");

    progress("building the initramfs");
    let load_order =
        modules::load_order(&kernel.modules, &recipe.drivers).map_err(ImageError::Recipe)?;
    write_initramfs(
        &staged.join("initramfs.cpio"),
        &busybox_bin,
        &kernel.modules,
        &load_order,
    )?;

    progress("building the root volume");
    let tree = work.path().join("root");
    rootfs::populate(&tree, &busybox_bin)?;
    progress("adding the SSH server");
    ssh_server::install(&tree, &ssh, &cache)?;
    // The kernel as the image boots it: a bzImage (Debian's, or one of
    // the operator's own) as vmlinuz, an ELF of one's own as vmlinux.
    let (kernel_name, kernel_file) = if staged.join("vmlinuz").exists() {
        ("vmlinuz", staged.join("vmlinuz"))
    } else {
        ("vmlinux", staged.join("vmlinux"))
    };
    let kernel_bytes =
        std::fs::read(&kernel_file).map_err(|e| ImageError::io("read", &kernel_file, e))?;
    let initramfs_path = staged.join("initramfs.cpio");
    let initramfs_bytes =
        std::fs::read(&initramfs_path).map_err(|e| ImageError::io("read", &initramfs_path, e))?;
    let (module_files, modules_dep) = match &kernel.modules_dir {
        Some(dir) => {
            // The disk drivers, then the NIC driver (when the kernel has it
            // as a module) and what it needs.
            let mut on_volume = load_order.clone();
            let nic: Vec<String> = NIC_DRIVERS
                .iter()
                .filter(|d| kernel.modules.contains_key(**d))
                .map(|d| d.to_string())
                .collect();
            for m in modules::load_order(&kernel.modules, &nic).map_err(ImageError::Recipe)? {
                if !on_volume.contains(&m) {
                    on_volume.push(m);
                }
            }
            modules::for_volume(&kernel.modules, dir, &on_volume).map_err(ImageError::Recipe)?
        }
        None => (Vec::new(), String::new()),
    };
    rootfs::install_boot(
        &tree,
        &rootfs::BootLayout {
            release: &kernel.release,
            kernel_name,
            kernel: &kernel_bytes,
            initramfs: &initramfs_bytes,
            modules: module_files,
            modules_dep,
            drivers: &recipe.drivers,
            init: INITRAMFS_INIT,
        },
    )?;
    rootfs::normalize_dir_modes(&tree)?;
    rootfs::make_ext4(
        &tree,
        "root",
        recipe.root_size_mib,
        &staged.join("root.ext4"),
    )?;
    seed_boot_memo(&staged, &dir, kernel_name, &kernel.release)?;

    let manifest = ImageManifest {
        key,
        kernel: kernel_version,
        kernel_release: kernel.release,
        busybox,
        recipe: recipe.clone(),
        load_order,
        features: kernel.features,
        boot_from_volume: true,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(staged.join("manifest.json"), text)
        .map_err(|e| ImageError::io("write", &staged, e))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| ImageError::io("remove", &dir, e))?;
    }
    std::fs::rename(&staged, &dir).map_err(|e| ImageError::io("move into place", &dir, e))?;
    Ok(BuiltImage {
        dir,
        manifest,
        cached: false,
    })
}

/// The boot files of a volume launched from this build are the build's
/// own: a memo of their identity on the volume lets a start read nothing
/// but the boot configuration and a few inodes (no kernel to read, hash
/// or extract). `staged` becomes `dir`.
fn seed_boot_memo(
    staged: &Path,
    dir: &Path,
    kernel_name: &str,
    release: &str,
) -> Result<(), ImageError> {
    use crate::boot_volume::{has_pvh_note, BootMemo, KernelBoot, MEMO_FILE};
    let elf = staged.join("vmlinux");
    let pvh =
        kernel_name == "vmlinux" || std::fs::read(&elf).is_ok_and(|bytes| has_pvh_note(&bytes));
    let pvh_file = if pvh { "vmlinux" } else { kernel_name };
    let initrd = format!("/boot/initrd.img-{release}");
    let old = format!("{initrd}.old");
    let memo = BootMemo::for_image(
        &staged.join("root.ext4"),
        &format!("/boot/{kernel_name}-{release}"),
        &[
            (KernelBoot::AsGiven, dir.join(kernel_name)),
            (KernelBoot::PreferPvh, dir.join(pvh_file)),
        ],
        &[&initrd, &old],
        &dir.join("initramfs.cpio"),
    )
    .map_err(|e| ImageError::Recipe(format!("cannot read back the root volume just built: {e}")))?;
    memo.save(&staged.join(MEMO_FILE))
        .map_err(|e| ImageError::io("write", &staged.join(MEMO_FILE), e))
}

fn find_kernel(tree: &Path) -> Result<(PathBuf, String), ImageError> {
    let boot = tree.join("boot");
    let entries = std::fs::read_dir(&boot).map_err(|e| ImageError::io("read", &boot, e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((e.path(), release.to_string()));
        }
    }
    Err(ImageError::Recipe(format!(
        "no vmlinuz-* in {}",
        boot.display()
    )))
}

fn write_initramfs(
    out: &Path,
    busybox: &Path,
    index: &std::collections::BTreeMap<String, PathBuf>,
    load_order: &[String],
) -> Result<(), ImageError> {
    let file = std::fs::File::create(out).map_err(|e| ImageError::io("create", out, e))?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    let io = |e| ImageError::io("write", out, e);
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "newroot",
        "proc",
        "sys",
    ] {
        w.add(dir, 0o755, EntryKind::Dir).map_err(io)?;
    }
    w.add(
        "dev/console",
        0o600,
        EntryKind::CharDevice { major: 5, minor: 1 },
    )
    .map_err(io)?;
    let bb = std::fs::read(busybox).map_err(|e| ImageError::io("read", busybox, e))?;
    w.add("bin/busybox", 0o755, EntryKind::File(&bb))
        .map_err(io)?;
    w.add("bin/sh", 0o777, EntryKind::Symlink("busybox"))
        .map_err(io)?;
    for m in load_order {
        let data = std::fs::read(&index[m]).map_err(|e| ImageError::io("read", &index[m], e))?;
        w.add(
            &format!("lib/modules/{m}.ko"),
            0o644,
            EntryKind::File(&data),
        )
        .map_err(io)?;
    }
    let drivers = load_order.join("\n") + "\n";
    w.add(
        "etc/drydock-drivers",
        0o644,
        EntryKind::File(drivers.as_bytes()),
    )
    .map_err(io)?;
    w.add("init", 0o755, EntryKind::File(INITRAMFS_INIT.as_bytes()))
        .map_err(io)?;
    let mut inner = w.finish().map_err(io)?;
    inner.flush().map_err(io)
}
