//! User worlds: ring-3 programs shipped in the Mantle image. Nothing lives here yet.
