//! The contract between the pipeline and the backends (container sandbox, microVM).
