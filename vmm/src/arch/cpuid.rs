//! CPUID for each vCPU: KVM's supported list, normalised so a guest sees
//! a consistent virtual CPU: the hypervisor bit set, its own APIC id and
//! the vCPU count in the topology leaves, nested virtualisation and the
//! performance-monitoring unit hidden.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_EXT_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;

const ECX_VMX: u32 = 1 << 5;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const EXT_ECX_SVM: u32 = 1 << 2;

/// Rewrites `cpuid` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `id` of `count`.
pub fn normalize(cpuid: &mut CpuId, id: u8, count: u8) {
    let shift = u32::BITS - u32::from(count.max(1) - 1).leading_zeros();
    for e in cpuid.as_mut_slice().iter_mut() {
        normalize_entry(e, id, count, shift);
    }
}

fn normalize_entry(e: &mut kvm_cpuid_entry2, id: u8, count: u8, shift: u32) {
    let id32 = u32::from(id);
    match e.function {
        LEAF_FEATURES => {
            e.ecx |= ECX_HYPERVISOR;
            e.ecx &= !ECX_VMX;
            // APIC id in 31..24, logical processors per package in 23..16.
            e.ebx = (e.ebx & 0x0000_ffff) | (id32 << 24) | (u32::from(count) << 16);
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        LEAF_PMU => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        LEAF_TOPOLOGY => {
            e.edx = id32;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8;
                }
                1 => {
                    e.eax = shift;
                    e.ebx = u32::from(count);
                    e.ecx = (2 << 8) | 1;
                }
                n => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = n;
                }
            }
        }
        LEAF_EXT_FEATURES => e.ecx &= !EXT_ECX_SVM,
        LEAF_EXT_SIZES => {
            // Number of cores minus one in ecx[7:0].
            e.ecx = (e.ecx & !0xff) | u32::from(count.max(1) - 1);
        }
        LEAF_AMD_TOPOLOGY => {
            e.eax = id32;
            e.ebx &= !0xff;
            e.ecx &= !0xff;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xabcd_1234,
            ecx: ECX_VMX | EXT_ECX_SVM,
            edx: 0,
            eax: 0x33,
            ..Default::default()
        }
    }

    #[test]
    fn leaves_carry_the_vcpu_identity_and_hide_what_breaks_guests() {
        let mut cpuid = CpuId::from_entries(&[
            entry(LEAF_FEATURES, 0),
            entry(LEAF_PMU, 0),
            entry(LEAF_TOPOLOGY, 1),
            entry(LEAF_EXT_FEATURES, 0),
        ])
        .unwrap();
        normalize(&mut cpuid, 3, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 3, "APIC id");
        assert_eq!((e[0].ebx >> 16) & 0xff, 4, "vCPU count");
        assert_eq!(e[0].ebx & 0xffff, 0x1234, "other bits kept");
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e[0].ecx & ECX_VMX, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!((e[1].eax, e[1].ebx), (0, 0), "no PMU");
        assert_eq!((e[2].eax, e[2].ebx, e[2].edx), (2, 4, 3), "topology");
        assert_eq!(e[3].ecx & EXT_ECX_SVM, 0);
    }
}
