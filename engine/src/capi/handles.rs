//! The registry of live handles: every pointer the library hands out (models, sessions, strings) is recorded here
//! with its type, and every pointer a caller hands back is looked up here *before* it is dereferenced. A freed
//! handle, a pointer the library never returned, and a handle of another type are all reported as
//! `ENGINE_STATUS_INVALID_HANDLE` without reading the memory they point to.
//!
//! What this cannot detect: an address that was freed and then reused by a new handle of the same type (the stale
//! pointer then names the new object). Callers must still not use handles after freeing them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

use super::status::{CResult, CapiError, EngineStatus};

/// What a live address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Model,
    Session,
    /// A string returned to the caller: the length of its allocation, terminating NUL included.
    String {
        alloc_len: usize,
    },
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Session => "session",
            Kind::String { .. } => "string",
        }
    }
    fn same_type(self, other: Kind) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&other)
    }
}

static LIVE: LazyLock<Mutex<HashMap<usize, Kind>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn live() -> MutexGuard<'static, HashMap<usize, Kind>> {
    // Nothing that can panic runs while the lock is held except the closures of `with_live`, which only clone an
    // `Arc`; the map is consistent after every single insert or remove, so a poisoned lock is still usable.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Record a new handle.
pub(crate) fn register(addr: usize, kind: Kind) {
    live().insert(addr, kind);
}

fn not_live(addr: usize, expected: Kind, found: Option<Kind>) -> CapiError {
    let why = match found {
        Some(k) => format!("it is a {} handle", k.name()),
        None => "it was freed or was never returned by this library".to_string(),
    };
    CapiError::new(EngineStatus::InvalidHandle, format!("{addr:#x} is not a live {} handle: {why}", expected.name()))
}

/// Run `f` while `addr` is known to be a live handle of `kind`, holding the registry lock so that no other
/// thread can free it meanwhile. `f` must be short and must not call back into the registry.
pub(crate) fn with_live<R>(addr: usize, kind: Kind, f: impl FnOnce() -> R) -> CResult<R> {
    let map = live();
    match map.get(&addr) {
        Some(k) if k.same_type(kind) => Ok(f()),
        other => Err(not_live(addr, kind, other.copied())),
    }
}

/// Remove `addr` if it is a live handle of `kind`'s type, returning its recorded kind. Exactly one caller can
/// succeed for a given registration, so the memory behind it is released exactly once.
pub(crate) fn unregister(addr: usize, kind: Kind) -> CResult<Kind> {
    let mut map = live();
    match map.get(&addr) {
        Some(&k) if k.same_type(kind) => {
            map.remove(&addr);
            Ok(k)
        }
        other => Err(not_live(addr, kind, other.copied())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_checks_liveness_and_type() {
        let addr = 0x1000_0000_usize; // never dereferenced
        register(addr, Kind::Model);
        assert_eq!(with_live(addr, Kind::Model, || 5).unwrap(), 5);
        let e = with_live(addr, Kind::Session, || ()).unwrap_err();
        assert_eq!(e.status, EngineStatus::InvalidHandle);
        assert!(e.message.contains("model handle"), "{}", e.message);
        assert!(unregister(addr, Kind::Session).is_err());
        assert_eq!(unregister(addr, Kind::Model).unwrap(), Kind::Model);
        let e = unregister(addr, Kind::Model).unwrap_err();
        assert!(e.message.contains("freed"), "{}", e.message);
        register(addr + 8, Kind::String { alloc_len: 3 });
        assert_eq!(unregister(addr + 8, Kind::String { alloc_len: 0 }).unwrap(), Kind::String { alloc_len: 3 });
    }
}
