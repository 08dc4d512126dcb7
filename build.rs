//! The `reprobox` binary is a PIE (its own code and data at a random address, as the rest of
//! the process: a tool whose job is isolation keeps address randomisation) linked with packed
//! relative relocations (`-z pack-relative-relocs`, DT_RELR; lld and binutils ≥ 2.38, glibc
//! ≥ 2.36). Of its ~23 000 relocations nearly all are relative: as `Elf64_Rela` entries they
//! are ~550 KB the dynamic loader reads at every start, as DT_RELR bitmaps 7.6 KB. What a PIE
//! still costs over `-no-pie` is the copy-on-write faults on the ~110 pages of `.data.rel.ro`
//! the relocations write (~0.3 ms per start); `reprobox run` stays faster than bwrap
//! (benches/README.md). Only the binary is affected (`-bins`), not the library, tests or
//! examples.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
