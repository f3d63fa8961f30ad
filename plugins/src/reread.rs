//! Files components read again on reload, without being rebuilt:
//! certificates, keys and CA files of a `tls` table, token files of an
//! `auth` table. `shipper run` calls [`request`] on SIGHUP and
//! `POST /reload`; each holder compares [`generation`] with the one it
//! loaded and reads its files again at its next use.

use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every holder read its files again at its next use.
pub fn request() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The current generation: a holder that loaded an older one reads its
/// files again.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}
