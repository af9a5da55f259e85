//! Mantle's `init`: reads an inittab, starts the entries in order, restarts
//! services with back-off and reaps every zombie (it is PID 1).
//!
//! The configuration format is documented in [`inittab`].

pub mod backoff;
pub mod inittab;
pub mod supervisor;

use std::path::PathBuf;

/// Where the image keeps the configuration.
pub const DEFAULT_CONFIG: &str = "/etc/inittab";

/// Command-line options of `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Configuration file (`--config PATH`, default [`DEFAULT_CONFIG`]).
    pub config: PathBuf,
    /// `--check`: parse the configuration, report problems and exit.
    pub check_only: bool,
}

pub const USAGE: &str = "usage: init [--config PATH] [--check]";

/// The inittab entries the kernel command line asks init to leave out:
/// `init.skip=ID[,ID...]` (e.g. `init.skip=hostd,cim-broker` for a host that
/// should come up without its management agents, as most image tests do —
/// hostd's start-up costs minutes in Bochs).
pub fn skipped_entries(cmdline: &str) -> Vec<String> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("init.skip="))
        .flat_map(|list| list.split(','))
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect()
}

impl Options {
    /// Parses the arguments after the program name. Arguments that are not options
    /// are ignored: the kernel may pass its own command-line words to PID 1.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, String> {
        let mut opts = Options { config: PathBuf::from(DEFAULT_CONFIG), check_only: false };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--config" | "-c" => {
                    opts.config = it.next().ok_or("--config needs a path")?.into();
                }
                "--check" => opts.check_only = true,
                "--help" | "-h" => return Err(USAGE.to_string()),
                s if s.starts_with("--config=") => opts.config = s["--config=".len()..].into(),
                s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
                _ => {}
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_to_etc_inittab() {
        assert_eq!(parse(&[]).unwrap(), Options { config: DEFAULT_CONFIG.into(), check_only: false });
    }

    #[test]
    fn config_and_check() {
        let o = parse(&["--config", "/x/tab", "--check"]).unwrap();
        assert_eq!(o.config, PathBuf::from("/x/tab"));
        assert!(o.check_only);
        assert_eq!(parse(&["--config=/y"]).unwrap().config, PathBuf::from("/y"));
    }

    #[test]
    fn init_skip_on_the_kernel_command_line() {
        assert_eq!(skipped_entries("console=ttyS0 init.skip=hostd,cim-broker quiet"), ["hostd", "cim-broker"]);
        assert_eq!(skipped_entries("init.skip=a init.skip=b,,c"), ["a", "b", "c"]);
        assert!(skipped_entries("quiet xinit.skip=hostd init.skip=").is_empty());
    }

    #[test]
    fn kernel_words_ignored_but_bad_options_rejected() {
        assert_eq!(parse(&["single", "quiet"]).unwrap().config, PathBuf::from(DEFAULT_CONFIG));
        assert!(parse(&["--bogus"]).unwrap_err().contains("unknown option --bogus"));
        assert!(parse(&["--config"]).unwrap_err().contains("needs a path"));
    }
}
