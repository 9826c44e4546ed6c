//! drydock's embedded KVM host.
//!
//! This crate will hold the virtual machine monitor (vCPUs, memory,
//! devices) and the instance, volume, image and region model. Today it
//! holds the probe that decides which instance backend a machine can use.

pub mod probe;
