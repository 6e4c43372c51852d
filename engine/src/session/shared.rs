//! The backend a model's sessions share: a lock that knows which thread holds it.
//!
//! Every use of a backend — a forward pass, a decode loop, creating a session's cache and dropping it — goes
//! through [`SharedBackend::lock`], so that no two interleave on the device (a CUDA backend has one stream, and
//! a decode graph is captured on it). Knowing the holder lets a session be dropped from inside a generate callback
//! of the same model, where this thread already holds the lock: waiting for it there would never end.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::backend::Backend;

/// A model's backend behind a lock that records its holder; sessions and the model hold it through an `Arc`.
pub struct SharedBackend {
    backend: Mutex<Box<dyn Backend>>,
    /// [`this_thread`] of the thread holding the lock; 0 when none does.
    holder: AtomicUsize,
}

/// A number for the calling thread, unique among live threads and never 0: the address of a thread-local.
fn this_thread() -> usize {
    thread_local!(static MARK: u8 = const { 0 });
    MARK.with(|m| m as *const u8 as usize)
}

impl SharedBackend {
    pub fn new(backend: Box<dyn Backend>) -> SharedBackend {
        SharedBackend { backend: Mutex::new(backend), holder: AtomicUsize::new(0) }
    }

    /// Wait for the backend and hold it until the guard drops.
    pub fn lock(&self) -> BackendGuard<'_> {
        // A panic inside a backend call poisons the lock; the backend's state is still consistent for reads of
        // configuration, and every forward pass rewrites what it reads, so continuing is sound.
        let guard = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        self.holder.store(this_thread(), Ordering::Relaxed);
        BackendGuard { guard, holder: &self.holder }
    }

    /// Whether the calling thread holds the lock (is inside a backend call, e.g. in a generate callback). Only the
    /// holder itself writes its own number, so the answer about this thread is exact.
    pub fn held_here(&self) -> bool {
        self.holder.load(Ordering::Relaxed) == this_thread()
    }
}

/// The backend while held: derefs to it; the holder is cleared before the lock is released.
pub struct BackendGuard<'a> {
    guard: MutexGuard<'a, Box<dyn Backend>>,
    holder: &'a AtomicUsize,
}

impl Drop for BackendGuard<'_> {
    fn drop(&mut self) {
        // Cleared before the mutex is released (fields drop after this body).
        self.holder.store(0, Ordering::Relaxed);
    }
}

impl Deref for BackendGuard<'_> {
    type Target = Box<dyn Backend>;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl DerefMut for BackendGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}
