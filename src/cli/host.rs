//! The embedded host: images, instances, volumes, snapshots, tags,
//! faults, driver volumes, DR drills, consoles.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from Debian packages (cached by package versions) and register it in the region
    Build(ImageBuildArgs),
    /// Make an image from an instance's root volume (stops and restarts a running instance unless --no-stop)
    Create {
        instance: String,
        #[arg(long)]
        name: String,
        /// Image a running instance as it is (crash-consistent)
        #[arg(long)]
        no_stop: bool,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Copy an image to another region
    Copy {
        image: String,
        #[arg(long, value_name = "REGION")]
        to_region: String,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Everything about one image
    Describe { image: String },
    /// Remove an image (instances launched from it keep running)
    Deregister { image: String },
    /// Launch permissions: public or private, and profiles allowed to launch it
    Modify {
        image: String,
        #[arg(long, conflicts_with = "private")]
        public: bool,
        #[arg(long)]
        private: bool,
        #[arg(long = "add-profile", value_name = "PROFILE")]
        add_profiles: Vec<String>,
        #[arg(long = "remove-profile", value_name = "PROFILE")]
        remove_profiles: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Image name
    #[arg(long, default_value = "debian-cloud")]
    pub name: String,
    /// Guest drivers the initramfs loads (comma-separated) [default: virtio_mmio,virtio_pci,virtio_blk]
    #[arg(long, value_delimiter = ',')]
    pub drivers: Vec<String>,
    /// Root volume size in MiB
    #[arg(long, default_value_t = 256)]
    pub root_size: u64,
    /// Your own kernel (bzImage or ELF vmlinux) with the virtio drivers built in, instead of Debian's cloud kernel (scripts/minimal-kernel builds one)
    #[arg(long, value_name = "FILE", conflicts_with = "drivers")]
    pub kernel: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct InstancesArgs {
    /// List every region
    #[arg(long)]
    pub all_regions: bool,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// After a host restart (power loss, crash): find instances whose process died, start those
    /// launched with --after-host-failure start, record the outage in each interrupted
    /// execution's journal and resume them in the background
    Recover {
        /// Only report and restart instances; leave interrupted executions for `drydock resume`
        #[arg(long)]
        no_resume: bool,
    },
    /// Run as root once: start the network agent, which makes instance networks (namespaces,
    /// bridges, TAPs, firewall rules) for the named accounts, so they launch instances with a
    /// network without being root
    SetupNetwork {
        /// An account the agent serves (repeatable)
        #[arg(long = "user", value_name = "NAME", required_unless_present = "remove")]
        users: Vec<String>,
        /// A namespace outside drydock those accounts' VPCs may have as uplink (repeatable)
        #[arg(long = "uplink", value_name = "NAMESPACE")]
        uplinks: Vec<String>,
        /// Stop the agent and remove what it made
        #[arg(long, conflicts_with_all = ["users", "uplinks"])]
        remove: bool,
    },
    /// The network agent itself (started by `setup-network`)
    #[command(hide = true)]
    NetworkAgent,
    /// `drydock ssh`'s ProxyCommand without CAP_NET_ADMIN: a connection to ADDR inside VPC's
    /// namespace, made by the network agent, carried over stdin/stdout
    #[command(hide = true)]
    SshProxy { vpc: String, addr: String },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Launch a new instance from an image
    Launch(LaunchArgs),
    /// Start a stopped instance
    Start { instance: String },
    /// Stop a running instance (the guest syncs and powers off; --force pulls the plug)
    Stop {
        instance: String,
        #[arg(long)]
        force: bool,
    },
    /// Reboot in place: same VM, same volumes
    Reboot { instance: String },
    /// Terminate: stop, delete DeleteOnTermination volumes, detach the rest
    Terminate { instance: String },
    /// Change the type of a stopped instance, or what a host outage leaves it as
    Modify {
        instance: String,
        #[arg(
            long = "type",
            value_name = "TYPE",
            required_unless_present_any = ["after_host_failure", "auto_recovery"]
        )]
        instance_type: Option<String>,
        /// stop (stays stopped after a host outage, as EC2) or start (started again by `drydock host recover`)
        #[arg(long, value_name = "stop|start")]
        after_host_failure: Option<String>,
        /// on: `drydock serve` starts it again when its system check fails (at most 3 times in 24 h by default)
        #[arg(long, value_name = "on|off")]
        auto_recovery: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Image id (see `drydock images`)
    #[arg(long)]
    pub image: String,
    /// Instance type (see `drydock instance-types`)
    #[arg(long = "type", default_value = "m1.small")]
    pub instance_type: String,
    /// Root password for console login (stored only as a SHA-512 crypt hash): param:NAME, file:PATH, env:VAR or prompt keep it off the command line
    #[arg(long, env = "DRYDOCK_ROOT_PASSWORD", hide_env_values = true)]
    pub root_password: Option<String>,
    /// Public SSH key file to authorize for root (repeatable)
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<std::path::PathBuf>,
    /// Script the guest runs once at first boot
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<std::path::PathBuf>,
    /// Guest host name [default: the instance id]
    #[arg(long)]
    pub hostname: Option<String>,
    /// Keep the root volume when the instance is terminated
    #[arg(long)]
    pub keep_root_volume: bool,
    /// Allow `drydock fault` to break this instance (tags it allow-faults=true)
    #[arg(long)]
    pub allow_faults: bool,
    /// What a host outage leaves it as: stop (default, as EC2) or start (started again by `drydock host recover`)
    #[arg(long, value_name = "stop|start", default_value = "stop")]
    pub after_host_failure: String,
    /// on: `drydock serve` starts it again (same id, volumes, addresses) when its system check fails — its VMM died, the host went down — at most 3 times in 24 h by default
    #[arg(long, value_name = "on|off", default_value = "off")]
    pub auto_recovery: String,
    /// Tag it at launch (repeatable); written with the instance's record
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Make the launch idempotent: a retry with the same token returns (and starts) the instance the first launch made
    #[arg(long, value_name = "TOKEN")]
    pub client_token: Option<String>,
    /// Subnet of its network interface (see `drydock subnets`) [default: the region's default subnet]
    #[arg(long, value_name = "SUBNET-ID")]
    pub subnet: Option<String>,
    /// Security group of its network interface (repeatable; see `drydock security-groups`) [default: the VPC's default group]
    #[arg(long = "security-group", value_name = "SG-ID")]
    pub security_groups: Vec<String>,
    /// Let the metadata service (169.254.169.254) answer requests without a session token (IMDSv1; EC2's HttpTokens=optional)
    #[arg(long)]
    pub imds_v1: bool,
    /// No network interface: only the serial console reaches it (for accounts without CAP_NET_ADMIN)
    #[arg(long, conflicts_with_all = ["subnet", "security_groups", "imds_v1"])]
    pub no_network: bool,
}

#[derive(Debug, Subcommand)]
pub enum VpcCommand {
    /// Make a VPC: a private IPv4 range (within 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16), /16 to /24
    Create {
        #[arg(long)]
        cidr: String,
    },
    /// Give the VPC a way out through a network namespace (its public subnets reach it through NAT), or take it away with --none
    Uplink {
        vpc: String,
        /// The namespace outside the VPC (`ip netns list`)
        #[arg(long, required_unless_present = "none", conflicts_with = "none")]
        netns: Option<String>,
        /// No way out: nothing leaves the VPC
        #[arg(long)]
        none: bool,
    },
    /// Delete a VPC that has no subnets
    Delete { vpc: String },
}

#[derive(Debug, Subcommand)]
pub enum SubnetCommand {
    /// Make a subnet of a VPC: inside its range, overlapping no other subnet, /16 to /28
    Create {
        #[arg(long, value_name = "VPC-ID")]
        vpc: String,
        #[arg(long)]
        cidr: String,
        /// No route out of the VPC, even when it has an uplink
        #[arg(long)]
        private: bool,
    },
    /// Delete a subnet no instance uses
    Delete { subnet: String },
}

#[derive(Debug, Subcommand)]
pub enum NetworkInterfaceCommand {
    /// Make an available interface with the lowest free address of a subnet
    Create {
        /// Its subnet [default: the region's default subnet]
        #[arg(long, value_name = "SUBNET-ID")]
        subnet: Option<String>,
        /// Security groups it joins (of the subnet's VPC; repeatable) [default: the VPC's default group]
        #[arg(long = "security-group", value_name = "SG-ID")]
        security_groups: Vec<String>,
    },
    /// Attach an available interface to an instance of its VPC, as its next device (eth1, eth2)
    Attach {
        interface: String,
        #[arg(long, value_name = "ID")]
        instance: String,
    },
    /// Detach an interface from its instance (never the primary one)
    Detach { interface: String },
    /// Delete an available interface (its address goes back to its subnet)
    Delete { interface: String },
}

#[derive(Debug, Subcommand)]
pub enum SecurityGroupCommand {
    /// Make a security group (it may send anywhere and admits nothing until rules are added)
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// VPC of the group [default: the region's default VPC]
        #[arg(long, value_name = "VPC-ID")]
        vpc: Option<String>,
    },
    /// Admit traffic: to members (ingress, the default) or from them (--egress)
    Authorize(RuleArgs),
    /// Remove a rule, named by what it matches
    Revoke(RuleArgs),
    /// Delete a group no instance is in and no other group's rule names
    Delete { group: String },
}

/// A security group rule: protocol, ports and the other side.
#[derive(Debug, clap::Args)]
pub struct RuleArgs {
    /// The group (sg-…)
    pub group: String,
    /// tcp, udp, icmp or all
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Port or range (tcp and udp): 22 or 8000-8080
    #[arg(long)]
    pub port: Option<String>,
    /// The other side as an IPv4 CIDR block (0.0.0.0/0 for anywhere)
    #[arg(
        long,
        conflicts_with = "source_group",
        required_unless_present = "source_group"
    )]
    pub cidr: Option<String>,
    /// The other side as the members of a group of the same VPC
    #[arg(long, value_name = "SG-ID")]
    pub source_group: Option<String>,
    /// An egress rule (what members may send) instead of ingress
    #[arg(long)]
    pub egress: bool,
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// The faults drydock can put into an instance, and what they look like
    Kinds,
    /// Put a fault into the root volume of a stopped instance
    Inject {
        instance: String,
        /// One of `drydock fault kinds`
        fault: String,
        /// What the fault acts on, for the faults that take it (stop-service: the service's name)
        target: Option<String>,
    },
    /// Undo a fault (by id or kind), or every fault of the instance (stopped)
    Revert {
        instance: String,
        fault: Option<String>,
    },
    /// Faults put into this region's instances (or one instance's)
    List { instance: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum DriverVolumeCommand {
    /// Build a driver volume in the region (prints its id)
    Create {
        /// The guest's kernel release (`uname -r` in the guest)
        #[arg(long, value_name = "RELEASE")]
        kernel: String,
        /// Kernel modules to carry, comma-separated (their dependencies are added)
        #[arg(long, value_delimiter = ',', required = true)]
        drivers: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// A drill's verdict, RTO and RPO per instance against the targets, and its timeline
    Report {
        /// The dr-drill execution (any unique prefix)
        execution: String,
        /// Also write the report as a page with the timeline drawn (SVG inside)
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
        /// Also write the timeline alone as an SVG picture
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The instance (i-…)
    pub instance: String,
    /// Log in as this user
    #[arg(long, short = 'l', default_value = "root")]
    pub user: String,
    /// Private key file (else ssh's defaults, or a password prompt)
    #[arg(short = 'i', value_name = "KEY")]
    pub identity: Option<std::path::PathBuf>,
    /// A command to run instead of a login shell (after --)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConsoleOutputArgs {
    pub instance: String,
    /// Only the last N lines
    #[arg(long)]
    pub tail: Option<usize>,
    /// Which boot (1 = first) [default: the latest]
    #[arg(long)]
    pub boot: Option<u32>,
    /// Only output from this byte offset of the boot's log (the reply says the next offset)
    #[arg(long, conflicts_with = "tail")]
    pub since: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    pub instance: String,
    /// Watch only; others may type
    #[arg(long)]
    pub read_only: bool,
    /// Take the console over from whoever holds it
    #[arg(long, conflicts_with = "read_only")]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a network volume: empty, formatted ext4, or from a snapshot
    Create {
        /// Size in MiB (default with --snapshot: the snapshot's size)
        #[arg(long)]
        size: Option<u64>,
        /// Restore this snapshot into the new volume
        #[arg(long)]
        snapshot: Option<String>,
        /// Format it ext4 with this label
        #[arg(long, value_name = "LABEL")]
        ext4: Option<String>,
        /// Tag it at creation (repeatable)
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Attach to an instance (stopped, or running for new-generation types)
    Attach {
        volume: String,
        instance: String,
        /// Attach as the root volume of a stopped instance that has none
        #[arg(long)]
        root: bool,
    },
    /// Detach (root volumes only from stopped instances; never instance storage)
    Detach {
        volume: String,
        /// Detach from a running instance even if the guest still has it mounted
        #[arg(long)]
        force: bool,
    },
    /// Delete a detached volume
    Delete { volume: String },
    /// Change whether the volume is deleted when its instance terminates
    Modify {
        volume: String,
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
        delete_on_termination: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a volume (only its allocated extents are copied)
    Create {
        volume: String,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Delete a snapshot
    Delete { snapshot: String },
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// An instance (i-…) or volume (vol-…)
    pub resource: String,
    /// KEY=VALUE (an empty value is allowed: KEY=)
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UntagArgs {
    /// An instance (i-…) or volume (vol-…)
    pub resource: String,
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// tag:KEY=VALUE or tag:KEY
    pub filter: Option<String>,
}
