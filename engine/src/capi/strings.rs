//! Strings across the boundary: reading the caller's NUL-terminated UTF-8 arguments, handing out strings the
//! caller frees with `engine_string_free`, and the version string.

use std::ffi::{c_char, CStr};

use super::handles::{self, Kind};
use super::status::{guard, guard_value, CResult, CapiError, EngineStatus};

/// Borrow the caller's NUL-terminated string argument `what` as UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unmodified for `'a` (the duration of the
/// entry point that received it, as every function documents).
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> CResult<&'a str> {
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    // SAFETY: non-NULL, and by this function's contract NUL-terminated and valid for 'a.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        CapiError::new(
            EngineStatus::InvalidUtf8,
            format!("{what} is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })
}

/// Copy `bytes` into a new NUL-terminated allocation owned by the caller (freed with `engine_string_free`).
/// Interior NULs are kept; callers that need them use the length the call returns.
pub(crate) fn new_string(bytes: &[u8]) -> *mut c_char {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.extend_from_slice(bytes);
    v.push(0);
    let b: Box<[u8]> = v.into_boxed_slice();
    let alloc_len = b.len();
    let p = Box::into_raw(b) as *mut u8;
    handles::register(p as usize, Kind::String { alloc_len });
    p.cast()
}

/// Free a string this library returned (`engine_detokenize`'s text, `engine_generate_result.text`).
/// NULL is a no-op returning `ENGINE_STATUS_OK`. A pointer the library did not return, or one already freed, gives
/// `ENGINE_STATUS_INVALID_HANDLE` and is left alone (never passed to a deallocator).
///
/// Thread-safety: safe from any thread; a string may be freed on another thread than the one that received it.
///
/// # Safety
/// None beyond the above: `s` is only compared with the addresses of live strings, never read unless it is one.
#[no_mangle]
pub unsafe extern "C" fn engine_string_free(s: *mut c_char) -> EngineStatus {
    guard(|| {
        if s.is_null() {
            return Ok(());
        }
        let Kind::String { alloc_len } = handles::unregister(s as usize, Kind::String { alloc_len: 0 })? else {
            unreachable!("unregister returns the kind it was asked for");
        };
        // SAFETY: the registry recorded `s` as a live string of `alloc_len` bytes, which `new_string` made with
        // `Box::<[u8]>::into_raw`; `unregister` succeeded, so this is the only release of that allocation.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(s.cast::<u8>(), alloc_len)) });
        Ok(())
    })
}

/// The library version, e.g. "0.1.0". Static storage, never NULL, do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn engine_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    guard_value(VERSION.as_ptr(), || VERSION.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_foreign_pointers_are_refused() {
        let s = new_string(b"a\0b");
        // SAFETY: `s` is a live string of 4 bytes made above.
        assert_eq!(unsafe { std::slice::from_raw_parts(s.cast::<u8>(), 4) }, b"a\0b\0");
        // SAFETY: engine_string_free never dereferences a pointer it did not hand out.
        unsafe {
            assert_eq!(engine_string_free(s), EngineStatus::Ok);
            assert_eq!(engine_string_free(s), EngineStatus::InvalidHandle);
            assert_eq!(engine_string_free(std::ptr::null_mut()), EngineStatus::Ok);
            let mut local = *b"x\0";
            assert_eq!(engine_string_free(local.as_mut_ptr().cast()), EngineStatus::InvalidHandle);
        }
    }

    #[test]
    fn str_arg_checks_null_and_utf8() {
        // SAFETY: the arguments are NULL or NUL-terminated literals.
        unsafe {
            assert_eq!(str_arg(std::ptr::null(), "text").unwrap_err().status, EngineStatus::NullPointer);
            let bad = b"ok\xff\0";
            let e = str_arg(bad.as_ptr().cast(), "text").unwrap_err();
            assert_eq!(e.status, EngineStatus::InvalidUtf8);
            assert!(e.message.contains("offset 2"), "{}", e.message);
            assert_eq!(str_arg(c"hi".as_ptr(), "text").unwrap(), "hi");
        }
    }
}
