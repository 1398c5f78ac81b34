//! [`Wiped`]: zeroing a foreign secret's bytes when it is dropped. With `sys`, the only
//! module allowed `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

/// A value whose bytes are overwritten with zeros once it is dropped: for a secret of a
/// crate that does not zeroize its own (ring's AEAD keys). Only for types that own
/// nothing outside their own bytes (no heap, no handles), which would be left unwiped.
pub struct Wiped<T>(std::mem::MaybeUninit<T>);

impl<T> Wiped<T> {
    /// Hold `value` until dropped.
    pub fn new(value: T) -> Wiped<T> {
        Wiped(std::mem::MaybeUninit::new(value))
    }
}

impl<T> std::ops::Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialized in `new`, and only dropped in `drop`.
        unsafe { self.0.assume_init_ref() }
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`; dropped here once, after which only its bytes
        // are written (a `MaybeUninit` may hold any bytes).
        unsafe { self.0.assume_init_drop() };
        let bytes = self.0.as_mut_ptr().cast::<u8>();
        for i in 0..std::mem::size_of::<T>() {
            // SAFETY: within this value's own bytes; volatile, so not optimized away.
            unsafe { std::ptr::write_volatile(bytes.add(i), 0) };
        }
    }
}
