//! The initramfs: newc cpio of the guest runtime, the spec, the kernel config and extra binaries with their shared-library closure, cached by content hash.
