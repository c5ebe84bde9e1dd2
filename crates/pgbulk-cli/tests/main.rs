//! The integration tests: one binary, one throwaway cluster per run.
