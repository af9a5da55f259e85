//! Mantle's PID 1. The logic lives in `userworld::init`; see there for the
//! inittab format.

use userworld::init::{self, Options};

fn main() {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            init::supervisor::log(&msg);
            // PID 1 must not exit: carry on with the defaults instead.
            if std::process::id() == 1 {
                Options::parse(Vec::new()).expect("defaults parse")
            } else {
                std::process::exit(2);
            }
        }
    };
    let code = init::supervisor::run(&opts);
    std::process::exit(code);
}
