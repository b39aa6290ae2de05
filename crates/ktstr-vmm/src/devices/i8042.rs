//! Just enough of the i8042 keyboard controller for a guest to reset the machine: command
//! 0xFE written to port 0x64 pulses the reset line. Status reads return 0 (buffers empty),
//! so Linux's `kb_wait()` does not spin.

pub const DATA_PORT: u16 = 0x60;
pub const COMMAND_PORT: u16 = 0x64;
/// Command: pulse the CPU reset line.
pub const CMD_RESET: u8 = 0xfe;

/// What a write to the controller means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum I8042Event {
    None,
    Reset,
}

/// A write of `value` to `port`.
pub fn write(port: u16, value: u8) -> I8042Event {
    if port == COMMAND_PORT && value == CMD_RESET {
        I8042Event::Reset
    } else {
        I8042Event::None
    }
}

/// A read of `port`: always 0 (no data, input buffer empty).
pub fn read(_port: u16) -> u8 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fe_on_64_resets() {
        assert_eq!(write(0x64, 0xfe), I8042Event::Reset);
        assert_eq!(write(0x60, 0xfe), I8042Event::None);
        assert_eq!(write(0x64, 0xd1), I8042Event::None);
        assert_eq!(read(0x64), 0);
    }
}
