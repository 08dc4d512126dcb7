//! The `reprobox` binary is linked position-dependent (`-no-pie`): a PIE of this size has
//! ~23 000 relative relocations, and applying them (copy-on-write faults on ~110 pages of
//! `.data.rel.ro`) costs ~0.4 ms of every start, a tenth of a short `reprobox run`
//! (benches/README.md). The price: the executable's own code and data are at fixed
//! addresses (shared libraries, heap, stack and mmap stay randomised). Deleting this file
//! brings PIE back. Only the binary is affected (`-bins`), not the library, tests or
//! examples.

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
