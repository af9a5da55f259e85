//! Management agents (hostd). Nothing lives here yet.
