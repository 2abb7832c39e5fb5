//! The few operating-system calls the package makes beyond std and tokio:
//! reverse name lookup, local time, the open-files limit, socket I/O
//! without the file layer, the I/O threads' priority.

use std::net::SocketAddr;

/// The host name of an address (getnameinfo, as Tcl's `-peername` gives),
/// or the address itself when it has none.
pub fn host_name(addr: &SocketAddr) -> String {
    // SAFETY: zeroed storage large enough for either family; we write the
    // family's sockaddr into it and pass its true length.
    let (storage, len) = unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as _;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as _;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    };
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: valid address of `len` bytes and a NUL-terminated output buffer.
    let r = unsafe {
        libc::getnameinfo(
            &storage as *const _ as *const libc::sockaddr,
            len,
            host.as_mut_ptr(),
            host.len() as _,
            std::ptr::null_mut(),
            0,
            0,
        )
    };
    if r == 0 {
        // SAFETY: getnameinfo wrote a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        addr.ip().to_string()
    }
}

/// One recv() on a socket: the bytes it held, up to `buf.len()`.
pub fn recv(sock: &impl std::os::fd::AsFd, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_fd().as_raw_fd();
    // SAFETY: a valid, borrowed fd and a writable buffer of buf.len() bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One recv() on a socket, appending up to `max` bytes to `buf` (received
/// straight into its spare capacity, nothing zeroed first).
pub fn recv_append(
    sock: &impl std::os::fd::AsFd,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_fd().as_raw_fd();
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = max.min(spare.len());
    // SAFETY: a valid, borrowed fd; recv writes at most `want` bytes into
    // the spare capacity, and only the `n` bytes it wrote become part of
    // the vector.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr() as *mut libc::c_void, want, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: recv initialised the first n (<= want <= spare) bytes.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// One send() (one buffer) or sendmsg() (several) on a socket, never
/// blocking and never raising SIGPIPE: the bytes it took. A socket skips the
/// file layer's work that write()/writev() do (measured: ~3% of a server's
/// CPU when every message is one small write).
pub fn send_vectored(
    sock: &impl std::os::fd::AsFd,
    parts: &[std::io::IoSlice<'_>],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_fd().as_raw_fd();
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    let n = match parts {
        [] => 0,
        // SAFETY: a valid, borrowed fd and a readable buffer of part.len() bytes.
        [part] => unsafe {
            libc::send(fd, part.as_ptr() as *const libc::c_void, part.len(), flags)
        },
        _ => {
            // SAFETY: IoSlice is ABI-compatible with iovec (std documents
            // it); the slices outlive the call, which only reads them.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = parts.len().min(1024) as _;
                libc::sendmsg(fd, &msg, flags)
            }
        }
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The local time as Tcl's `clock format [clock seconds]` writes it.
pub fn local_time() -> String {
    // The same clock as `clock seconds` (gettimeofday): time() reads a
    // coarse clock that can lag it by a tick just after a second begins.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r and strftime write only into our buffers.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            c"%a %b %d %H:%M:%S %Z %Y".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Raises the open-files limit to its hard maximum (10,000 connections
/// need more than the usual 1024).
pub fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Lets the other runnable threads of this CPU run first.
pub fn yield_cpu() {
    // SAFETY: no arguments, no memory.
    unsafe { libc::sched_yield() };
}

/// Raises the calling thread's nice value by `by` (at most to 19), so it
/// yields to the thread that created it (Linux: nice is per thread).
#[cfg(target_os = "linux")]
pub fn lower_thread_priority(by: i32) -> std::io::Result<()> {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        // getpriority can return -1 as a value: errno tells.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19)) == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_a_name_or_its_address() {
        let n = host_name(&"127.0.0.1:80".parse().unwrap());
        assert!(!n.is_empty());
        let t = local_time();
        assert!(t.len() > 20, "{t}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn thread_nice_applies_to_the_calling_thread_only() {
        let nice = || unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        let before = nice();
        let inside = std::thread::spawn(move || {
            lower_thread_priority(3).unwrap();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(inside, before + 3);
        assert_eq!(nice(), before);
    }
}
