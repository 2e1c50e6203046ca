//! Survive a dump file that another process shortens while it is mapped.
//!
//! Touching a page of a shared file map that lies past the file's current end raises `SIGBUS`. By default
//! that kills the process. A dump is memory-mapped (never read into memory), and every analysis borrows
//! pages straight from the map, so there is no single copy routine to guard. Instead:
//!
//! * every map is registered in a fixed, lock-free table (start, length, flag);
//! * a `SIGBUS` handler looks the faulting address up; if it lies in a registered map, it maps one
//!   anonymous zero page over the faulting page (`mmap(MAP_FIXED)`), records the file offset in the map's
//!   flag, and *returns*: the interrupted instruction runs again and reads zeros. No stack is unwound,
//!   no `longjmp` crosses Rust frames, and no control flow changes;
//! * every read path of [`crate::Dump`] and every Python entry point checks the flag and reports
//!   [`crate::Error::Format`] "file shrank while open" instead of answering from the zeros;
//! * a fault outside every registered map goes to the handler that was installed before (Python's
//!   `faulthandler`, Rust's stack-overflow handler, or the default action, which ends the process).
//!
//! Why this is sound: the bytes of a shared file map can already change under a `&[u8]` when another
//! process writes the file — that is the documented contract of a file map (`memmap2::Mmap::map` is
//! `unsafe` for this reason) and the reason the map is treated as untrusted bytes. Replacing a vanished page
//! with zeros is one more change of that kind; it never makes memory inaccessible, never jumps, and the
//! handler only does async-signal-safe work (atomic loads/stores and one `mmap` system call).
//! The alternative the issue suggests — `sigsetjmp`/`siglongjmp` from the handler back into Rust — skips
//! destructors and is undefined behaviour; checking the file size with `fstat` before each read is racy
//! (the file can shrink between the check and the copy) and costs a system call per read.
//!
//! Limits: a table of [`SLOTS`] maps (further maps are not protected, and say so through
//! [`GuardedMap::protected`]); Unix only (Windows refuses to truncate a mapped file, so it needs none).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many maps can be protected at once.
pub const SLOTS: usize = 1024;

/// Per-map record of a shrink: `u64::MAX` while intact, else the file offset (bytes) of the first page
/// found missing.
#[derive(Debug)]
pub struct ShrinkFlag(AtomicU64);

impl ShrinkFlag {
    fn new() -> Self {
        ShrinkFlag(AtomicU64::new(u64::MAX))
    }

    /// File offset (bytes) of the first page found past the end of the shrunken file, if any.
    #[inline]
    pub fn shrank_at(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            u64::MAX => None,
            o => Some(o),
        }
    }

    fn record(&self, off: u64) {
        self.0.fetch_min(off, Ordering::AcqRel);
    }
}

/// A read-only file map registered with the fault handler.
pub struct GuardedMap {
    map: memmap2::Mmap,
    flag: Arc<ShrinkFlag>,
    slot: Option<usize>,
}

impl GuardedMap {
    /// Map `file` read-only and register the map.
    ///
    /// # Safety
    /// As for [`memmap2::Mmap::map`]: the file may change under the map. Truncation is handled here; other
    /// changes give whatever bytes the file then holds (dumps are untrusted input either way).
    pub unsafe fn map(file: &std::fs::File) -> std::io::Result<GuardedMap> {
        let map = memmap2::MmapOptions::new().map(file)?;
        let flag = Arc::new(ShrinkFlag::new());
        let slot = imp::register(map.as_ptr() as usize, map.len(), &flag);
        Ok(GuardedMap { map, flag, slot })
    }

    /// The mapped bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Advise the kernel how the map is about to be read (`madvise`; see [`crate::dump::Access`]).
    #[cfg(unix)]
    pub fn advise(&self, advice: memmap2::Advice) -> std::io::Result<()> {
        self.map.advise(advice)
    }

    /// The shrink flag of this map.
    #[inline]
    pub fn flag(&self) -> &ShrinkFlag {
        &self.flag
    }

    /// True when the fault handler covers this map (false past [`SLOTS`] live maps, or off Unix).
    pub fn protected(&self) -> bool {
        self.slot.is_some()
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            imp::unregister(s);
        }
    }
}

/// Slot table: `START[i]` is 0 when free, [`RESERVED`] while being filled, else the map's address.
#[cfg_attr(not(unix), allow(dead_code))]
static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
#[cfg_attr(not(unix), allow(dead_code))]
static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
#[cfg_attr(not(unix), allow(dead_code))]
static FLAG: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
const RESERVED: usize = 1;

/// The flag of the registered map holding `addr`, and the map's start (signal-safe: atomics only).
#[cfg_attr(not(unix), allow(dead_code))]
fn lookup(addr: usize) -> Option<(usize, &'static ShrinkFlag)> {
    for i in 0..SLOTS {
        let s = START[i].load(Ordering::Acquire);
        if s <= RESERVED || addr < s {
            continue;
        }
        let len = LEN[i].load(Ordering::Acquire);
        if addr - s < len {
            let f = FLAG[i].load(Ordering::Acquire) as *const ShrinkFlag;
            // SAFETY: the flag is kept alive by the GuardedMap that owns the slot; a fault inside its map
            // means some thread is reading that map, so the GuardedMap (and its Arc) is alive.
            return (!f.is_null()).then(|| (s, unsafe { &*f }));
        }
    }
    None
}

#[cfg(unix)]
mod imp {
    use super::*;
    use std::sync::atomic::AtomicPtr;
    use std::sync::Mutex;

    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    /// The handler that was installed before ours (leaked `sigaction`), to chain to.
    static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
    static INSTALL: Mutex<()> = Mutex::new(());

    pub(super) fn register(start: usize, len: usize, flag: &Arc<ShrinkFlag>) -> Option<usize> {
        if len == 0 {
            return None;
        }
        install();
        for i in 0..SLOTS {
            if START[i]
                .compare_exchange(0, RESERVED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                FLAG[i].store(Arc::as_ptr(flag) as usize, Ordering::Release);
                LEN[i].store(len, Ordering::Release);
                START[i].store(start, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    pub(super) fn unregister(i: usize) {
        START[i].store(RESERVED, Ordering::Release);
        LEN[i].store(0, Ordering::Release);
        FLAG[i].store(0, Ordering::Release);
        START[i].store(0, Ordering::Release);
    }

    #[cfg(target_os = "linux")]
    unsafe fn fault_addr(info: *const libc::siginfo_t) -> usize {
        (*info).si_addr() as usize
    }

    #[cfg(not(target_os = "linux"))]
    unsafe fn fault_addr(info: *const libc::siginfo_t) -> usize {
        (*info).si_addr as usize
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        if !info.is_null() {
            // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
            let addr = unsafe { fault_addr(info) };
            if let Some((start, flag)) = lookup(addr) {
                let page = PAGE.load(Ordering::Relaxed);
                let at = addr & !(page - 1);
                // SAFETY: `at` is a page inside a live read-only map we own; replacing that page with an
                // anonymous zero page keeps the range mapped (and readable) until the map is dropped, when
                // munmap of the whole range removes it too.
                let p = unsafe {
                    libc::mmap(
                        at as *mut libc::c_void,
                        page,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if p != libc::MAP_FAILED {
                    flag.record((at.max(start) - start) as u64);
                    return;
                }
            }
        }
        chain(sig, info, ctx);
    }

    /// Hand a fault that is not ours to the previous handler (or to the default action).
    fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let prev = PREVIOUS.load(Ordering::Acquire);
        // SAFETY: PREVIOUS is a leaked, never-freed sigaction written before our handler was installed.
        let act = unsafe { prev.as_ref() };
        let handler = act.map(|a| a.sa_sigaction).unwrap_or(libc::SIG_DFL);
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            // Restore the default action and return: the faulting instruction runs again and the fault
            // now ends the process, as it would have without us.
            // SAFETY: plain sigaction call with a zeroed (default) action.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
            return;
        }
        let flags = act.map(|a| a.sa_flags).unwrap_or(0);
        // SAFETY: calling the previously installed handler with the arguments the kernel gave us, in the
        // form (one or three arguments) it was installed with.
        unsafe {
            if flags & libc::SA_SIGINFO != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(handler);
                f(sig, info, ctx);
            } else {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                f(sig);
            }
        }
    }

    /// Install our SIGBUS handler unless it is the current one (someone may have installed theirs since:
    /// then ours goes in front and chains to theirs).
    fn install() {
        let _g = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: querying and setting the process's SIGBUS disposition with valid pointers.
        unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut cur) != 0 {
                return;
            }
            if cur.sa_sigaction == on_sigbus as *const () as usize {
                return;
            }
            let ps = libc::sysconf(libc::_SC_PAGESIZE);
            if ps > 0 {
                PAGE.store(ps as usize, Ordering::Relaxed);
            }
            PREVIOUS.store(Box::into_raw(Box::new(cur)), Ordering::Release);
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;

    pub(super) fn register(_start: usize, _len: usize, _flag: &Arc<ShrinkFlag>) -> Option<usize> {
        None
    }

    pub(super) fn unregister(_i: usize) {}
}
