//! passwd-file (being written).
