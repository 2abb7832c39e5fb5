//! Safe handles on Tcl values. `Obj` owns one reference; `ObjRef` borrows an
//! argument for the length of a command call. Both live on the interpreter's
//! thread only (neither is Send).

use super::ffi::{self, Tcl_Interp, Tcl_Obj};
use super::interp::Interp;
use super::utf;
use std::borrow::Cow;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The interpreter to leave an error message in, if any.
fn raw(interp: Option<Interp>) -> *mut Tcl_Interp {
    interp.map_or(std::ptr::null_mut(), |i| i.as_ptr())
}

/// A borrowed Tcl value (a command argument or an element of a list).
#[derive(Clone, Copy)]
pub struct ObjRef<'a> {
    ptr: NonNull<Tcl_Obj>,
    _life: PhantomData<&'a Tcl_Obj>,
}

/// An owned reference to a Tcl value.
pub struct Obj {
    ptr: NonNull<Tcl_Obj>,
}

impl<'a> ObjRef<'a> {
    /// # Safety
    /// `p` must be a live Tcl_Obj for `'a`, on this thread.
    pub unsafe fn from_raw(p: *mut Tcl_Obj) -> Self {
        ObjRef {
            ptr: NonNull::new(p).expect("null Tcl_Obj"),
            _life: PhantomData,
        }
    }

    pub fn as_ptr(&self) -> *mut Tcl_Obj {
        self.ptr.as_ptr()
    }

    /// The string in Tcl's internal form (NUL as C0 80, surrogate pairs).
    pub fn tcl_bytes(&self) -> &'a [u8] {
        let mut n: isize = 0;
        // SAFETY: the object is live for 'a; Tcl keeps its string rep until it changes.
        unsafe {
            let p = ffi::ws_get_string(self.as_ptr(), &mut n);
            std::slice::from_raw_parts(p as *const u8, n as usize)
        }
    }

    /// The string as UTF-8, a lone surrogate replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> String {
        utf::tcl_to_string_lossy(self.tcl_bytes())
    }

    /// The string as real UTF-8 (for text frames).
    pub fn to_utf8(&self) -> Result<Cow<'a, [u8]>, utf::LoneSurrogate> {
        utf::tcl_to_utf8(self.tcl_bytes())
    }

    /// The value as bytes (`binary` semantics). Tcl 8.6 takes each
    /// character's low 8 bits; Tcl 9 refuses a string holding a character
    /// above U+00FF, as its own byte commands do: `None` then, with Tcl's
    /// message in `interp` if given.
    ///
    /// The bytes are borrowed from the object's byte-array representation.
    /// It lasts for `'a` even if the same object is also another argument
    /// that is read as a number, boolean or list: those conversions
    /// (get_wide, get_boolean, get_double, list_elements) read a copy of a
    /// byte array rather than convert it (shim.c), and string access adds
    /// a string representation without freeing this one.
    pub fn byte_array(&self, interp: Option<Interp>) -> Option<&'a [u8]> {
        let mut n: isize = 0;
        // SAFETY: as tcl_bytes; the byte array rep stays until the object changes.
        unsafe {
            let p = ffi::ws_get_bytearray(raw(interp), self.as_ptr(), &mut n);
            if p.is_null() {
                return None;
            }
            if n == 0 {
                return Some(&[]);
            }
            Some(std::slice::from_raw_parts(p, n as usize))
        }
    }

    pub fn to_owned(&self) -> Obj {
        // SAFETY: live object; we take our own reference.
        unsafe { Obj::from_raw(self.as_ptr()) }
    }

    /// Integer value, with Tcl's error message in the interpreter on failure.
    pub fn get_wide(&self, interp: Option<Interp>) -> Option<i64> {
        let mut v = 0i64;
        // SAFETY: live object; interp may be null.
        let r = unsafe { ffi::ws_get_wide(raw(interp), self.as_ptr(), &mut v) };
        (r == ffi::TCL_OK).then_some(v)
    }

    pub fn get_boolean(&self, interp: Option<Interp>) -> Option<bool> {
        let mut v = 0;
        // SAFETY: live object; interp may be null.
        let r = unsafe { ffi::ws_get_boolean(raw(interp), self.as_ptr(), &mut v) };
        (r == ffi::TCL_OK).then_some(v != 0)
    }

    pub fn get_double(&self, interp: Option<Interp>) -> Option<f64> {
        let mut v = 0f64;
        // SAFETY: live object; interp may be null.
        let r = unsafe { ffi::ws_get_double(raw(interp), self.as_ptr(), &mut v) };
        (r == ffi::TCL_OK).then_some(v)
    }

    /// The elements of a list, each an owned reference: they stay valid
    /// whatever later happens to the list object's representation.
    pub fn list_elements(&self, interp: Option<Interp>) -> Option<Vec<Obj>> {
        let mut n: isize = 0;
        let mut elems: *mut *mut Tcl_Obj = std::ptr::null_mut();
        let mut holder: *mut Tcl_Obj = std::ptr::null_mut();
        // SAFETY: live object; on TCL_OK Tcl returns an array of n live
        // objects owned by `holder`, which we release after taking our own
        // references (ws_list_elements took one on it in every case).
        unsafe {
            let r =
                ffi::ws_list_elements(raw(interp), self.as_ptr(), &mut n, &mut elems, &mut holder);
            let items = (r == ffi::TCL_OK).then(|| {
                (0..n as usize)
                    .map(|i| Obj::from_raw(*elems.add(i)))
                    .collect()
            });
            ffi::ws_decr(holder);
            items
        }
    }
}

impl Obj {
    /// # Safety
    /// `p` must be a live Tcl_Obj on this thread; a new reference is taken.
    pub unsafe fn from_raw(p: *mut Tcl_Obj) -> Obj {
        let ptr = NonNull::new(p).expect("null Tcl_Obj");
        ffi::ws_incr(ptr.as_ptr());
        Obj { ptr }
    }

    pub fn borrow(&self) -> ObjRef<'_> {
        // SAFETY: we hold a reference for as long as the borrow.
        unsafe { ObjRef::from_raw(self.ptr.as_ptr()) }
    }

    pub fn as_ptr(&self) -> *mut Tcl_Obj {
        self.ptr.as_ptr()
    }

    pub fn to_string_lossy(&self) -> String {
        self.borrow().to_string_lossy()
    }

    /// Gives up ownership: the caller now holds our reference.
    pub fn into_raw(self) -> *mut Tcl_Obj {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    pub fn empty() -> Obj {
        // SAFETY: fresh object.
        unsafe { Obj::from_raw(ffi::ws_new_obj()) }
    }

    /// A Tcl string from Rust text (converted to Tcl's internal form).
    pub fn string(s: &str) -> Obj {
        Obj::from_utf8(s.as_bytes())
    }

    /// A Tcl string from valid UTF-8 bytes, written straight into the new object.
    pub fn from_utf8(utf8: &[u8]) -> Obj {
        let n = utf::tcl_len_of_utf8(utf8);
        let mut raw: *mut Tcl_Obj = std::ptr::null_mut();
        // SAFETY: Tcl allocates n+1 bytes for the string rep, which we fill entirely.
        unsafe {
            let p = ffi::ws_new_string_uninit(n as isize, &mut raw);
            let out = std::slice::from_raw_parts_mut(p as *mut u8, n);
            utf::utf8_to_tcl_into(utf8, out);
            Obj::from_raw(raw)
        }
    }

    pub fn bytes(b: &[u8]) -> Obj {
        // SAFETY: Tcl copies n bytes.
        unsafe { Obj::from_raw(ffi::ws_new_bytearray(b.as_ptr(), b.len() as isize)) }
    }

    pub fn int(v: i64) -> Obj {
        // SAFETY: fresh object.
        unsafe { Obj::from_raw(ffi::ws_new_wide(v)) }
    }

    pub fn list(items: &[Obj]) -> Obj {
        let ptrs: Vec<*mut Tcl_Obj> = items.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: Tcl takes its own references to the elements.
        unsafe { Obj::from_raw(ffi::ws_new_list(ptrs.len() as isize, ptrs.as_ptr())) }
    }

    pub fn list_of_strings<S: AsRef<str>>(items: &[S]) -> Obj {
        let objs: Vec<Obj> = items.iter().map(|s| Obj::string(s.as_ref())).collect();
        Obj::list(&objs)
    }
}

impl Clone for Obj {
    fn clone(&self) -> Obj {
        // SAFETY: live object.
        unsafe { Obj::from_raw(self.as_ptr()) }
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { ffi::ws_decr(self.ptr.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use crate::tcl::testing::TestInterp;

    /// An argument's bytes stay valid when the same object is also read as
    /// a number, boolean, double or list (Tcl shares equal literals among
    /// arguments): those readings leave its byte array in place.
    #[test]
    fn byte_array_survives_other_readings_of_the_same_object() {
        let t = TestInterp::new();
        t.ok("set ::v [binary format a1 1]");
        let v = t.interp().global_var("v").unwrap();
        let r = v.borrow();
        let bytes = r.byte_array(None).unwrap();
        assert_eq!(r.get_wide(None), Some(1));
        assert_eq!(r.get_boolean(None), Some(true));
        assert_eq!(r.get_double(None), Some(1.0));
        assert_eq!(r.list_elements(None).map(|l| l.len()), Some(1));
        assert_eq!(bytes, b"1");
        assert!(t
            .ok("tcl::unsupported::representation $::v")
            .contains("bytearray"));
    }

    /// List elements are owned: the list object may become something else.
    #[test]
    fn list_elements_outlive_the_list_representation() {
        let t = TestInterp::new();
        t.ok("set ::l [list alpha [string repeat b 3]]");
        let l = t.interp().global_var("l").unwrap();
        let elems = l.borrow().list_elements(None).unwrap();
        t.ok("unset ::l");
        assert_eq!(l.borrow().byte_array(None).unwrap(), b"alpha bbb");
        drop(l);
        let words: Vec<String> = elems.iter().map(|e| e.to_string_lossy()).collect();
        assert_eq!(words, ["alpha", "bbb"]);
    }

    /// A malformed list is Tcl's error, left in the interpreter when given.
    #[test]
    fn list_elements_error() {
        let t = TestInterp::new();
        let o = super::Obj::string("a {b");
        assert!(o.borrow().list_elements(Some(t.interp())).is_none());
        let msg = t.interp().result().to_string_lossy();
        assert!(msg.contains("unmatched open brace"), "{msg}");
    }
}
