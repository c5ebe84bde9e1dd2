//! OS accounts: the current user (libpq's default role name) and the
//! unprivileged account a root-started local server runs as.

use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// An OS account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: PathBuf,
}

/// The account of the effective user id.
pub(crate) fn current() -> Option<Account> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    lookup(|pwd, buf, len, result| {
        // SAFETY: all pointers come from live locals of `lookup`.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
    })
}

/// The account called `name`.
pub(crate) fn by_name(name: &str) -> Option<Account> {
    let name = CString::new(name).ok()?;
    lookup(|pwd, buf, len, result| {
        // SAFETY: all pointers come from live locals of `lookup`; `name` is a
        // NUL-terminated string that outlives the call.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, result) }
    })
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lookup(
    call: impl Fn(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> Option<Account> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is a plain C struct; all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name and pw_dir point to NUL-terminated strings
    // inside `buf`, which is still alive.
    let (name, home) = unsafe {
        (
            CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
        )
    };
    Some(Account {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: PathBuf::from(home),
    })
}
