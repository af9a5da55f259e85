//! Kernel command-line options.
//!
//! Options are `key=value` or bare `key` words separated by spaces. Unknown
//! words are kept so the kernel can log them; a bad value is reported and
//! the default kept — a typo on the command line must not stop a boot.

use arrayvec::{ArrayString, ArrayVec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "error" | "1" => Self::Error,
            "warn" | "2" => Self::Warn,
            "info" | "3" => Self::Info,
            "debug" | "4" => Self::Debug,
            "trace" | "5" => Self::Trace,
            _ => return None,
        })
    }
}

/// What to do once boot (and any selected in-kernel tests) has finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterBoot {
    /// Stay up (the normal case: the host serves VMs).
    Run,
    /// ACPI power-off (S5).
    PowerOff,
    /// ACPI / platform reset.
    Reboot,
}

/// Faults a test can ask the kernel to cause, to prove the exception path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// Dereference an unmapped address (page fault).
    PageFault,
    /// Execute `ud2` (invalid opcode).
    InvalidOpcode,
    /// Rust `panic!`.
    Panic,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub log_level: LogLevel,
    /// `test=<selector>`: run the in-kernel tests whose name starts with the
    /// selector (`all` runs every test).
    pub test: Option<ArrayString<64>>,
    /// `debug_exit[=port]`: report the final status through QEMU's
    /// isa-debug-exit device. Off unless asked: the kernel cannot detect it.
    pub debug_exit: Option<u16>,
    pub after_boot: AfterBoot,
    pub inject_fault: Option<InjectedFault>,
    /// `init=<path>`: the first user world (default /sbin/init).
    pub init: ArrayString<128>,
    /// Words the parser did not understand (logged at boot).
    pub unknown: ArrayVec<ArrayString<64>, 8>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            test: None,
            debug_exit: None,
            after_boot: AfterBoot::Run,
            inject_fault: None,
            init: ArrayString::new(),
            unknown: ArrayVec::new(),
        }
    }
}

/// QEMU isa-debug-exit default port.
pub const DEFAULT_DEBUG_EXIT_PORT: u16 = 0xf4;

fn parse_u16(s: &str) -> Option<u16> {
    match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Options {
    pub fn parse(cmdline: &str) -> Self {
        let mut o = Self::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            let ok = match (key, value) {
                ("loglevel", Some(v)) => LogLevel::parse(v).map(|l| o.log_level = l).is_some(),
                ("init", Some(v)) => ArrayString::from(v).map(|s| o.init = s).is_ok(),
                ("test", Some(v)) => ArrayString::from(v).map(|s| o.test = Some(s)).is_ok(),
                ("debug_exit", None) => {
                    o.debug_exit = Some(DEFAULT_DEBUG_EXIT_PORT);
                    true
                }
                ("debug_exit", Some(v)) => parse_u16(v).map(|p| o.debug_exit = Some(p)).is_some(),
                ("after_boot", Some(v)) => {
                    o.after_boot = match v {
                        "run" => AfterBoot::Run,
                        "poweroff" => AfterBoot::PowerOff,
                        "reboot" => AfterBoot::Reboot,
                        _ => {
                            o.note_unknown(word);
                            continue;
                        }
                    };
                    true
                }
                ("inject_fault", Some(v)) => {
                    o.inject_fault = match v {
                        "pagefault" => Some(InjectedFault::PageFault),
                        "ud" => Some(InjectedFault::InvalidOpcode),
                        "panic" => Some(InjectedFault::Panic),
                        _ => {
                            o.note_unknown(word);
                            continue;
                        }
                    };
                    true
                }
                _ => false,
            };
            if !ok {
                o.note_unknown(word);
            }
        }
        o
    }

    fn note_unknown(&mut self, word: &str) {
        let mut s = ArrayString::new();
        for c in word.chars() {
            if s.try_push(c).is_err() {
                break;
            }
        }
        let _ = self.unknown.try_push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = Options::parse("");
        assert_eq!(o, Options::default());
        assert_eq!(o.log_level, LogLevel::Info);
        assert_eq!(o.after_boot, AfterBoot::Run);
    }

    #[test]
    fn all_options() {
        let o = Options::parse("loglevel=debug test=mm debug_exit after_boot=poweroff inject_fault=pagefault init=/bin/sh");
        assert_eq!(o.init.as_str(), "/bin/sh");
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.test.unwrap().as_str(), "mm");
        assert_eq!(o.debug_exit, Some(0xf4));
        assert_eq!(o.after_boot, AfterBoot::PowerOff);
        assert_eq!(o.inject_fault, Some(InjectedFault::PageFault));
        assert!(o.unknown.is_empty());
    }

    #[test]
    fn debug_exit_port_and_unknown_words() {
        let o = Options::parse("/boot/vmkernel debug_exit=0x501 loglevel=loud after_boot=sideways");
        assert_eq!(o.debug_exit, Some(0x501));
        assert_eq!(o.log_level, LogLevel::Info);
        assert_eq!(o.after_boot, AfterBoot::Run);
        let unknown: Vec<&str> = o.unknown.iter().map(|s| s.as_str()).collect();
        assert_eq!(unknown, ["/boot/vmkernel", "loglevel=loud", "after_boot=sideways"]);
    }
}
