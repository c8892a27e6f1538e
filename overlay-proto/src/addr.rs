//! addr
