//! Kernel images: the cache, `KTSTR_KERNEL` resolution, fetching the pinned Debian kernel.
