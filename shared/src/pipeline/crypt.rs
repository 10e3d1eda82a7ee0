//! Placeholder: filled by the chunked AEAD work.
