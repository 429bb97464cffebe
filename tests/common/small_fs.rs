//! A small file system of the test's own, so a broker can fill its disk:
//! a loop-mounted ext4 image (no root reserve, so `df` and the broker agree
//! on what is free), or a size-limited tmpfs where loop devices are
//! missing. Both need root; without it the caller skips with a message.
//! Unmounted when dropped.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A mounted file system of a few MiB.
pub struct SmallFs {
    /// Where it is mounted.
    pub path: PathBuf,
    /// `ext4` or `tmpfs`.
    pub kind: &'static str,
    _holder: tempfile::TempDir,
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

impl SmallFs {
    /// Mounts a file system of `mib` MiB, or says why it cannot (not root,
    /// or neither a loop device nor tmpfs can be mounted).
    pub fn mount(mib: u64) -> Result<SmallFs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: mounting a small file system needs root (CI runs as root)".into());
        }
        let holder = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = holder.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let image = holder.path().join("fs.img");
        let mnt = path.to_str().ok_or("path")?;
        let image_str = image.to_str().ok_or("path")?;
        let ext4 = std::fs::File::create(&image).and_then(|f| f.set_len(mib << 20)).is_ok()
            && run("mkfs.ext4", &["-q", "-F", "-m", "0", image_str])
            && run("mount", &["-o", "loop", image_str, mnt]);
        if ext4 {
            return Ok(SmallFs { path, kind: "ext4", _holder: holder });
        }
        let _ = std::fs::remove_file(&image);
        if run("mount", &["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", mnt]) {
            return Ok(SmallFs { path, kind: "tmpfs", _holder: holder });
        }
        Err("neither a loop-mounted ext4 (mkfs.ext4 from e2fsprogs, a loop device) nor a tmpfs could be mounted".into())
    }

    /// Bytes free, as `df` shows them.
    pub fn free_bytes(&self) -> u64 {
        // SAFETY: statvfs fills a zeroed struct from a valid C string.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(self.path.to_str().unwrap_or_default()).expect("path");
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0, "statvfs");
        stat.f_bavail * stat.f_frsize
    }

    /// A file taking `bytes` of real space (not sparse), to fill the disk
    /// with and free it again.
    pub fn filler(&self, name: &str, bytes: u64) -> PathBuf {
        let path = self.path.join(name);
        let file = std::fs::File::create(&path).expect("filler");
        // SAFETY: fallocate on a descriptor we own.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
        assert_eq!(rc, 0, "fallocate filler: {}", std::io::Error::last_os_error());
        file.sync_all().expect("sync filler");
        path
    }

    /// Takes every byte left, down to the last block: writes until the
    /// file system refuses.
    pub fn fill_up(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).expect("filler");
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
            let zeros = vec![0u8; chunk];
            while file.write_all(&zeros).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }

    /// A directory on it.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let mnt = self.path.to_str().unwrap_or_default().to_string();
        if !run("umount", &[&mnt]) {
            // Still busy (a child not yet reaped): detach it now, gone when
            // the last user closes it.
            let _ = run("umount", &["-l", &mnt]);
        }
    }
}
