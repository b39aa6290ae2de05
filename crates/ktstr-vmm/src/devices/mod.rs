//! Emulated legacy devices on the port I/O bus: the COM1 16550 UART (console) and the
//! i8042 controller (reset line). Everything else is in KVM (PIC, IOAPIC, LAPIC, PIT).

pub mod i8042;
pub mod serial;

/// What the port bus did with an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusAction {
    /// Handled (or ignored); keep running.
    Continue,
    /// The guest asked for a reset (i8042 command 0xFE).
    Reset,
}
