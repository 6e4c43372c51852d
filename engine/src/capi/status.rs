//! Status codes, the thread-local last-error message, and the guard every entry point runs its body in.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{self, AssertUnwindSafe};

use crate::error::Error;
use engine_format::FormatErrorKind;

/// What every fallible call returns. The values are stable: new codes get new numbers, none is ever renumbered.
/// On any value other than `ENGINE_STATUS_OK`, `engine_last_error()` describes what went wrong.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL (the message names it).
    NullPointer = 1,
    /// A handle that is not live: already freed, never returned by this library, or of another type (a session
    /// passed as a model). Detected without reading the pointed-to memory.
    InvalidHandle = 2,
    /// An argument or option is outside its allowed range (the message names it and the range).
    InvalidArgument = 3,
    /// A string argument is not valid UTF-8 (the message gives the byte offset).
    InvalidUtf8 = 4,
    /// The caller's buffer is too small; the size needed was written to the call's size out-parameter.
    BufferTooSmall = 5,
    /// The model directory, or a file the checkpoint needs, does not exist.
    NotFound = 6,
    /// A file exists but could not be read or mapped.
    Io = 7,
    /// The checkpoint is malformed or unsupported (the message names the file and tensor).
    Format = 8,
    /// The tokenizer could not be loaded, or could not convert text or ids.
    Tokenizer = 9,
    /// More tokens than the session's context holds.
    ContextOverflow = 10,
    /// The requested backend cannot run here (no GPU, no driver, ...).
    BackendUnavailable = 11,
    /// A device call failed.
    Device = 12,
    /// The session is being used by another call: from another thread, or re-entrantly from a generate callback.
    SessionBusy = 13,
    /// A call from an `engine_generate` callback needs the model that is generating (a forward pass of any of its
    /// sessions, or a new session): the model's backend is in use until the callback returns.
    ModelBusy = 14,
    /// A bug in the library: a Rust panic was caught at the boundary. The message has the panic's text.
    Internal = 99,
}

/// Every status, for `engine_status_string` and tests.
pub(crate) const ALL_STATUSES: [EngineStatus; 16] = [
    EngineStatus::Ok,
    EngineStatus::NullPointer,
    EngineStatus::InvalidHandle,
    EngineStatus::InvalidArgument,
    EngineStatus::InvalidUtf8,
    EngineStatus::BufferTooSmall,
    EngineStatus::NotFound,
    EngineStatus::Io,
    EngineStatus::Format,
    EngineStatus::Tokenizer,
    EngineStatus::ContextOverflow,
    EngineStatus::BackendUnavailable,
    EngineStatus::Device,
    EngineStatus::SessionBusy,
    EngineStatus::ModelBusy,
    EngineStatus::Internal,
];

impl EngineStatus {
    /// A short fixed description, NUL-terminated.
    fn description(self) -> &'static CStr {
        match self {
            EngineStatus::Ok => c"ok",
            EngineStatus::NullPointer => c"null pointer argument",
            EngineStatus::InvalidHandle => c"invalid handle (freed, foreign or of another type)",
            EngineStatus::InvalidArgument => c"invalid argument",
            EngineStatus::InvalidUtf8 => c"string is not valid UTF-8",
            EngineStatus::BufferTooSmall => c"buffer too small",
            EngineStatus::NotFound => c"file or directory not found",
            EngineStatus::Io => c"I/O error",
            EngineStatus::Format => c"malformed or unsupported checkpoint",
            EngineStatus::Tokenizer => c"tokenizer error",
            EngineStatus::ContextOverflow => c"context overflow",
            EngineStatus::BackendUnavailable => c"backend unavailable",
            EngineStatus::Device => c"device error",
            EngineStatus::SessionBusy => c"session busy (used concurrently or re-entrantly)",
            EngineStatus::ModelBusy => c"model busy (its generate callback is running on this thread)",
            EngineStatus::Internal => c"internal error (caught panic)",
        }
    }
}

/// An error on its way out of the C ABI: the status and the message for `engine_last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapiError {
    pub status: EngineStatus,
    pub message: String,
}

pub(crate) type CResult<T> = Result<T, CapiError>;

impl CapiError {
    pub fn new(status: EngineStatus, message: impl Into<String>) -> Self {
        CapiError { status, message: message.into() }
    }
    pub fn null(what: &str) -> Self {
        Self::new(EngineStatus::NullPointer, format!("{what} is NULL"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(EngineStatus::InvalidArgument, message)
    }
}

impl From<Error> for CapiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Format(f) if f.kind == FormatErrorKind::MissingFile => EngineStatus::NotFound,
            Error::Format(_) => EngineStatus::Format,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => EngineStatus::NotFound,
            Error::Io { .. } => EngineStatus::Io,
            Error::InvalidArgument(_) => EngineStatus::InvalidArgument,
            Error::ContextOverflow { .. } => EngineStatus::ContextOverflow,
            Error::Tokenizer(_) => EngineStatus::Tokenizer,
            Error::BackendUnavailable(_) => EngineStatus::BackendUnavailable,
            Error::Device(_) => EngineStatus::Device,
        };
        CapiError::new(status, e.to_string())
    }
}

impl From<engine_tools::TokenizerError> for CapiError {
    fn from(e: engine_tools::TokenizerError) -> Self {
        CapiError::new(EngineStatus::Tokenizer, format!("tokenizer: {e}"))
    }
}

thread_local! {
    /// The message of the last call on this thread that returned a status ("" after a success).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs would truncate the message in C; show them as U+2400 (the NUL symbol) instead.
    let c = CString::new(message.replace('\0', "\u{2400}")).unwrap_or_default();
    // `try_with` fails only while the thread is being torn down; the message is then dropped.
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut slot) = e.try_borrow_mut() {
            *slot = c;
        }
    });
}

/// The text of a panic payload (`panic!` with a literal or a format string); other payloads are named as such.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Run an entry point's body: its error becomes the status and the thread's last-error message, a success clears
/// the message, and a panic is caught (it never unwinds into the caller's frames) and becomes `Internal`.
///
/// `AssertUnwindSafe`: after a caught panic the only state a later call can observe is a session's token list
/// and KV cache (the session lock is then poisoned, and later calls use the state anyway, as the backend lock
/// does): tokens are appended only after a forward pass succeeded, so the list never claims positions the cache
/// lacks, and positions past it are rewritten before they are read.
pub(crate) fn guard(body: impl FnOnce() -> CResult<()>) -> EngineStatus {
    let (status, message) = match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => (EngineStatus::Ok, String::new()),
        Ok(Err(e)) => (e.status, e.message),
        Err(payload) => {
            let text = panic_message(&*payload);
            // Dropping a payload runs its destructor, which could itself panic: catch that too, and leak it.
            if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            (EngineStatus::Internal, format!("internal error: the library panicked: {text}"))
        }
    };
    set_last_error(&message);
    status
}

/// Like [`guard`] for the few calls that return a value instead of a status: a panic gives `fallback`, and the
/// last-error message is left alone (these calls cannot fail, so they do not report).
pub(crate) fn guard_value<T: Copy>(fallback: T, body: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            fallback
        }
    }
}

/// The message of the last call on this thread that returned a status: "" after a success, else what went wrong
/// (names the argument, file or limit concerned). Never NULL.
///
/// Lifetime: the pointer is owned by the library and stays valid until the next call of any `engine_*` function
/// that returns an `engine_status` on the same thread; copy it to keep it. Do not free it.
///
/// Thread-safety: safe from any thread; each thread has its own message.
#[no_mangle]
pub extern "C" fn engine_last_error() -> *const c_char {
    const EMPTY: &CStr = c"";
    guard_value(EMPTY.as_ptr(), || {
        // The CString lives in this thread's slot until `set_last_error` replaces it, i.e. until the next
        // status-returning call on this thread: exactly the documented lifetime.
        LAST_ERROR.try_with(|e| e.try_borrow().map(|s| s.as_ptr()).unwrap_or(EMPTY.as_ptr())).unwrap_or(EMPTY.as_ptr())
    })
}

/// A fixed English description of a status code ("context overflow"); "unknown status" for values this version
/// does not define. Never NULL; static storage, do not free. Thread-safe.
///
/// Takes an `int32_t` rather than an `engine_status` so that any integer is a valid argument.
#[no_mangle]
pub extern "C" fn engine_status_string(status: i32) -> *const c_char {
    const UNKNOWN: &CStr = c"unknown status";
    guard_value(UNKNOWN.as_ptr(), || {
        ALL_STATUSES.iter().find(|s| **s as i32 == status).map_or(UNKNOWN.as_ptr(), |s| s.description().as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: engine_last_error never returns NULL, and the string stays valid until the next status call on
        // this thread; it is copied before any.
        unsafe { CStr::from_ptr(engine_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn guard_sets_and_clears_the_message() {
        assert_eq!(guard(|| Err(CapiError::invalid("top_k is bad"))), EngineStatus::InvalidArgument);
        assert_eq!(last(), "top_k is bad");
        assert_eq!(guard(|| Ok(())), EngineStatus::Ok);
        assert_eq!(last(), "");
    }

    #[test]
    fn panics_become_internal_errors_with_their_message() {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        let s = guard(|| panic!("boom {}", 42));
        let s2 = guard(|| std::panic::panic_any(7u8));
        panic::set_hook(prev);
        assert_eq!(s2, EngineStatus::Internal);
        assert!(last().contains("non-string payload"), "{}", last());
        assert_eq!(s, EngineStatus::Internal);
        assert_eq!(guard_value(1, || panic!("x")), 1);
    }

    #[test]
    fn messages_are_per_thread_and_nul_safe() {
        guard(|| Err(CapiError::invalid("a\0b")));
        std::thread::spawn(|| {
            assert_eq!(last(), "");
            guard(|| Err(CapiError::invalid("other thread")));
            assert_eq!(last(), "other thread");
        })
        .join()
        .unwrap();
        assert_eq!(last(), "a\u{2400}b");
    }

    #[test]
    fn status_strings_cover_every_code_and_unknown_values() {
        for s in ALL_STATUSES {
            // SAFETY: engine_status_string returns a static NUL-terminated string.
            let text = unsafe { CStr::from_ptr(engine_status_string(s as i32)) };
            assert!(!text.to_bytes().is_empty());
            assert_ne!(text.to_bytes(), b"unknown status", "{s:?}");
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(engine_status_string(-5)) };
        assert_eq!(unknown.to_bytes(), b"unknown status");
    }

    #[test]
    fn engine_errors_map_to_their_codes() {
        let e: CapiError = Error::ContextOverflow { needed: 9, limit: 8, what: "x" }.into();
        assert_eq!(e.status, EngineStatus::ContextOverflow);
        let e: CapiError = Error::io("/nope", std::io::Error::from(std::io::ErrorKind::NotFound)).into();
        assert_eq!(e.status, EngineStatus::NotFound);
        let e: CapiError = Error::io("/x", std::io::Error::from(std::io::ErrorKind::PermissionDenied)).into();
        assert_eq!(e.status, EngineStatus::Io);
    }
}
