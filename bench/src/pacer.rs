//! Ticks finer than tokio's timer (which rounds to whole milliseconds), from
//! a `timerfd` the runtime's reactor watches. A fixed-rate load sends what
//! is due at each tick: with 1 ms ticks, 50,000 msgs/s leave in bursts of
//! 50; with finer ticks the same rate arrives smoother, in more, smaller
//! requests.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// A periodic tick.
pub struct Pacer {
    fd: AsyncFd<OwnedFd>,
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long }
}

impl Pacer {
    /// Ticks every `period`.
    pub fn new(period: Duration) -> io::Result<Pacer> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let period = timespec(period.max(Duration::from_micros(1)));
        let spec = libc::itimerspec { it_interval: period, it_value: period };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the timerfd is owned by the AsyncFd and never closed or
        // replaced while registered.
        Ok(Pacer { fd: unsafe { AsyncFd::register(fd)? } })
    }

    /// Waits for the next tick.
    pub async fn tick(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into a local buffer from a nonblocking fd.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len()) };
            if n == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            guard.clear_ready();
        }
    }
}
