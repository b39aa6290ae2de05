//! Architecture-specific guest setup. Only x86-64 is supported.

pub mod x86_64;
