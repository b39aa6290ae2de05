//! Boot-time MSR values for a vCPU entering long mode directly (syscall MSRs cleared,
//! fast strings on, MTRRs default to write-back).

use kvm_bindings::{kvm_msr_entry, Msrs};

pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled (bit 11), default type write-back (6).
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    #[error("cannot build the MSR list: {0}")]
    Build(String),
    #[error("KVM_SET_MSRS on vCPU {vcpu}: {source}")]
    Set {
        vcpu: u32,
        source: kvm_ioctls::Error,
    },
    #[error(
        "KVM_SET_MSRS on vCPU {vcpu} set only {set} of {want} MSRs; the first refused is {msr:#x}"
    )]
    Partial {
        vcpu: u32,
        set: usize,
        want: usize,
        msr: u32,
    },
}

/// The (index, value) pairs written at boot.
pub fn boot_msr_values() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

/// Writes the boot MSRs to `vcpu`.
pub fn set_boot_msrs(vcpu: &kvm_ioctls::VcpuFd, index: u32) -> Result<(), MsrError> {
    let values = boot_msr_values();
    let entries: Vec<kvm_msr_entry> = values
        .iter()
        .map(|&(i, v)| kvm_msr_entry {
            index: i,
            data: v,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| MsrError::Build(format!("{e:?}")))?;
    let set = vcpu.set_msrs(&msrs).map_err(|source| MsrError::Set {
        vcpu: index,
        source,
    })?;
    if set != values.len() {
        return Err(MsrError::Partial {
            vcpu: index,
            set,
            want: values.len(),
            msr: values.get(set).map(|v| v.0).unwrap_or(0),
        });
    }
    Ok(())
}
