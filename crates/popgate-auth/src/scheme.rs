//! schemes (being written).
