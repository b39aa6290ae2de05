//! The host<->guest protocol of ktstr (`docs/protocol.md`): a shared-memory region with a
//! host-written header, a guest-to-host ring of CRC-checked frames and a small control
//! area, plus the JSON messages ([`msg`]) and the guest's run spec ([`spec`]).
//!
//! Pure code, no syscalls: the guest maps the region from `/dev/mem`, the host from a file
//! or from KVM guest memory, and both wrap it in a [`SharedMem`]. The one exception is
//! the `mmap` feature's `Mapping`, the file mapping both sides use. The host side
//! ([`init_header`], [`Reader`]) treats every guest-written byte as untrusted.
//!
//! ```
//! use ktstr_wire::{init_header, Kind, Reader, SharedMem, Writer};
//!
//! let shm = SharedMem::new_owned(64 * 1024);
//! let layout = init_header(&shm).unwrap();
//! let mut reader = Reader::new(&shm, layout);
//! let mut writer = Writer::attach(&shm).unwrap();
//! writer.try_write(Kind::OUTPUT, b"\x01hello").unwrap();
//! let frame = reader.next_frame().unwrap().unwrap();
//! assert_eq!(frame.payload, b"\x01hello");
//! ```

mod error;
mod frame;
pub mod inbox;
mod layout;
#[cfg(feature = "mmap")]
mod mapping;
pub mod msg;
pub mod nested;
pub mod newc;
mod reader;
pub mod scenario;
pub mod sched;
mod shm;
pub mod spec;
mod writer;

#[cfg(test)]
mod proptests;

pub use error::WireError;
pub use frame::{Frame, Kind, OutputStream, FRAME_HEADER_SIZE, FRAME_MAGIC};
pub use layout::{init_header, offsets, Layout, StopReason, HEADER_SIZE, MAGIC, VERSION};
#[cfg(feature = "mmap")]
pub use mapping::Mapping;
pub use msg::{decode_msg, encode_msg, GuestMsg};
pub use reader::{Reader, ReaderStats};
pub use shm::SharedMem;
pub use writer::{stop_requested, TryWriteError, Writer};
