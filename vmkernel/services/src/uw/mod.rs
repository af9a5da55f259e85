//! User worlds: Linux-ABI processes and threads on the VMkernel.
//!
//! - `process`: processes, threads, the process table, user memory access;
//! - `exec`: loading static ELF executables (`execve`);
//! - `fault`: user page faults (demand-zero, copy-on-write, stack growth);
//! - `signal`: signal state, delivery on return to ring 3, `rt_sigreturn`;
//! - `futex`: futex wait queues keyed by physical address;
//! - `files`: the root file system, /dev, /proc and the console tty;
//! - `fdtable`: per-process file descriptors;
//! - `io_wait`: how blocked system calls wait for readiness.

pub mod alarm;
pub mod commit;
pub mod exec;
pub mod fault;
pub mod fdtable;
pub mod files;
pub mod futex;
pub mod io_wait;
pub mod itimer;
pub mod mapped;
pub mod process;
pub mod signal;

