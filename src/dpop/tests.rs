//! Tests of the DPoP wrapper.
