//! Placeholder: filled in by the twin work.
