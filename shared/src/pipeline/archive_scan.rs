//! Placeholder: filled by the archive scanner work.
