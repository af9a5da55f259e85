//! Shared helpers for the image tests (filled below).
