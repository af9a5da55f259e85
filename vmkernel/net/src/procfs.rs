//! /proc/net texts.
