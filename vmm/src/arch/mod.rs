//! x86_64 machine setup for drydock's own VMM: the guest physical layout,
//! loading the kernel, initrd and command line with the Linux boot
//! protocol, ACPI tables and the MP table, CPUID, MSRs and the registers of a vCPU entering
//! the kernel's 64-bit entry point.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
