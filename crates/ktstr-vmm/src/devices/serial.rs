//! COM1: a 16550 UART (vm-superio) at 0x3f8, IRQ 4 through an irqfd. Its output goes to
//! the console log file; the last bytes are also kept in memory for failure reports.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
/// Bytes of console output kept in memory.
pub const TAIL_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("creating the console log {path}: {source}")]
    Log { path: String, source: io::Error },
    #[error("creating the UART interrupt eventfd: {0}")]
    EventFd(io::Error),
}

/// Raises IRQ 4 by writing the eventfd that KVM has registered as an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The console sink: a buffered log file plus an in-memory tail.
pub struct ConsoleOut {
    file: BufWriter<File>,
    tail: Arc<Mutex<VecDeque<u8>>>,
    written: u64,
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut t) = self.tail.lock() {
            for b in buf {
                if t.len() == TAIL_BYTES {
                    t.pop_front();
                }
                t.push_back(*b);
            }
        }
        self.written += buf.len() as u64;
        // Log write failures are not guest-visible; keep the tail even if the disk is full.
        let _ = self.file.write_all(buf);
        if buf.contains(&b'\n') {
            let _ = self.file.flush();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// COM1 with its log.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOut>,
    tail: Arc<Mutex<VecDeque<u8>>>,
}

impl SerialConsole {
    /// A UART writing to `log` (created or truncated).
    pub fn new(log: &Path) -> Result<Self, SerialError> {
        let file = File::create(log).map_err(|source| SerialError::Log {
            path: log.display().to_string(),
            source,
        })?;
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(SerialError::EventFd)?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES)));
        let out = ConsoleOut {
            file: BufWriter::new(file),
            tail: tail.clone(),
            written: 0,
        };
        Ok(Self {
            uart: Serial::new(IrqTrigger(evt), out),
            tail,
        })
    }

    /// The eventfd to register as an irqfd on GSI [`COM1_IRQ`].
    pub fn irq_evt(&self) -> &EventFd {
        &self.uart.interrupt_evt().0
    }

    /// Handles an access to port `COM1_BASE + offset`.
    pub fn write(&mut self, offset: u8, value: u8) {
        // A trigger failure only loses an interrupt; the byte is still logged.
        let _ = self.uart.write(offset, value);
    }
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Total bytes the guest has written to the console.
    pub fn bytes_written(&self) -> u64 {
        self.uart.writer().written
    }

    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }

    /// A handle on the in-memory tail of the console.
    pub fn tail_handle(&self) -> ConsoleTail {
        ConsoleTail(self.tail.clone())
    }
}

/// Shared view of the last [`TAIL_BYTES`] console bytes.
#[derive(Clone)]
pub struct ConsoleTail(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleTail {
    pub fn text(&self) -> String {
        match self.0.lock() {
            Ok(t) => String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>()).into_owned(),
            Err(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_reach_the_log_and_the_tail() {
        let dir = std::env::temp_dir().join(format!("ktstr-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        let mut s = SerialConsole::new(&log).unwrap();
        for b in b"hello\n" {
            s.write(0, *b);
        }
        s.flush();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\n");
        assert_eq!(s.tail_handle().text(), "hello\n");
        assert_eq!(s.bytes_written(), 6);
        // LSR (offset 5): transmitter empty bits set, so polling guests proceed.
        assert_eq!(s.read(5) & 0x60, 0x60);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
