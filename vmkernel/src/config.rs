//! The kernel command line, parsed once at boot.

use spin::Once;
use vmkernel::cmdline::Options;

static OPTIONS: Once<Options> = Once::new();

pub fn set(o: Options) {
    OPTIONS.call_once(|| o);
}

pub fn get() -> Option<&'static Options> {
    OPTIONS.get()
}
