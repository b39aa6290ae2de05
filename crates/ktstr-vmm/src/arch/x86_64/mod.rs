//! x86-64 guest setup: where everything lives in guest-physical memory, the boot-time CPU
//! state (GDT, page tables, registers, MSRs), CPUID and ACPI topology, and kernel loading.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod msr;
pub mod regs;
