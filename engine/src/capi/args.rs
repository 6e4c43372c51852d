//! The caller's pointers: arrays borrowed for a call and out-parameters, checked so that a NULL, misaligned or
//! oversized one is an error naming the argument; and sizes fitted into the ABI's `uint32_t` fields.

use super::status::{CResult, CapiError};

/// Borrow the caller's array `p[0..n]` (`what` names it in errors). `n == 0` gives an empty slice whatever `p` is.
///
/// # Safety
/// If `n > 0` and `p` is not NULL, `p` points to `n` initialized values valid and unmodified during the call.
pub(crate) unsafe fn slice_arg<'a, T>(p: *const T, n: usize, what: &str) -> CResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    check_array(p, n, what)?;
    // SAFETY: non-NULL and aligned (checked), `n` elements fit in isize (checked), and the caller guarantees `n`
    // initialized values valid for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Borrow the caller's writable array `p[0..n]`.
///
/// # Safety
/// If `n > 0` and `p` is not NULL, `p` points to `n` writable values not otherwise accessed during the call.
pub(crate) unsafe fn slice_arg_mut<'a, T>(p: *mut T, n: usize, what: &str) -> CResult<&'a mut [T]> {
    if n == 0 {
        return Ok(&mut []);
    }
    check_array(p, n, what)?;
    // SAFETY: as in `slice_arg`, and the caller guarantees exclusive access to the `n` elements for the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

fn check_array<T>(p: *const T, n: usize, what: &str) -> CResult<()> {
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    if !p.is_aligned() {
        return Err(CapiError::invalid(format!("{what} is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    if n.checked_mul(std::mem::size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(CapiError::invalid(format!("{what}: {n} elements is too large")));
    }
    Ok(())
}

/// Write `v` through the caller's out-parameter `p`.
///
/// # Safety
/// `p` is NULL or points to writable memory for one `T` (its old value is not dropped).
pub(crate) unsafe fn write_out<T>(p: *mut T, v: T, what: &str) -> CResult<()> {
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    if !p.is_aligned() {
        return Err(CapiError::invalid(format!("{what} is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    // SAFETY: non-NULL, aligned, and writable by the caller's contract; `write` does not read or drop the old
    // value, which may be uninitialized.
    unsafe { p.write(v) };
    Ok(())
}

/// Check that an out-parameter is usable before doing work whose result would be lost.
pub(crate) fn check_out<T>(p: *mut T, what: &str) -> CResult<()> {
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    if !p.is_aligned() {
        return Err(CapiError::invalid(format!("{what} is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    Ok(())
}

/// Saturating conversion for sizes reported through `uint32_t` fields.
pub(crate) fn u32_sat(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
