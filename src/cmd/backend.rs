//! The backend arguments `reprobox run` and `reprobox reproduce` share, and the one place
//! they are checked and turned into a [`BackendChoice`].

use std::path::PathBuf;

use crate::backend::{BackendChoice, MicrovmChoice};
use crate::error::{Error, Result};

/// The backends a job can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendKind {
    /// Namespaces, pivot_root, narrowed capabilities, Landlock (src/sandbox).
    #[default]
    Container,
    /// qemu `-M microvm` guests (src/vm) with their own kernel and a wall clock set to
    /// SOURCE_DATE_EPOCH (a reproduction's jobs share one root disk).
    Microvm,
}

impl BackendKind {
    /// From the flag's value.
    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "container" => Some(BackendKind::Container),
            "microvm" => Some(BackendKind::Microvm),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct BackendArgs {
    /// Where the job runs.
    #[arg(long, value_enum, default_value = "container")]
    pub backend: BackendKind,
    /// microVM: the guest kernel (bzImage) [default: for `run`, the host's
    /// /boot/vmlinuz-<running release> (else the newest /boot/vmlinuz-* whose modules are
    /// installed); for `reproduce`, the `linux` package of the environment's day from the
    /// archive].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// microVM: an extra initramfs loaded before reprobox's own (needs --kernel).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// microVM: guest memory in MiB [default: 1024 for `run`, 2048 for `reproduce`].
    #[arg(long, value_name = "MIB")]
    pub vm_memory: Option<u64>,
    /// microVM: guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub vm_cpus: u32,
}

impl BackendArgs {
    /// The checked choice; `default_memory_mib` is the command's own default.
    pub fn choice(&self, default_memory_mib: u64) -> Result<BackendChoice> {
        match self.backend {
            BackendKind::Container => {
                if self.kernel.is_some() || self.initrd.is_some() {
                    return Err(Error::bad_input(
                        "--kernel/--initrd",
                        "taken only with --backend microvm (the container runs on the host's kernel)",
                    ));
                }
                Ok(BackendChoice::Container)
            }
            BackendKind::Microvm => {
                // The --initrd/--kernel rule is the kernel selection's own
                // (vm::kernel::KernelSource::from_options): checked here first so that a
                // bad combination fails before anything is fetched.
                crate::vm::kernel::KernelSource::from_options(
                    self.kernel.as_deref(),
                    self.initrd.as_deref(),
                )?;
                let memory_mib = self.vm_memory.unwrap_or(default_memory_mib);
                if self.vm_cpus == 0 || memory_mib < 256 {
                    return Err(Error::bad_input(
                        format!("--vm-cpus {} / --vm-memory {memory_mib}", self.vm_cpus),
                        "expected at least 1 CPU and 256 MiB",
                    ));
                }
                Ok(BackendChoice::Microvm(MicrovmChoice {
                    kernel: self.kernel.clone(),
                    initrd: self.initrd.clone(),
                    memory_mib,
                    cpus: self.vm_cpus,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(backend: BackendKind) -> BackendArgs {
        BackendArgs {
            backend,
            vm_cpus: 2,
            ..BackendArgs::default()
        }
    }

    #[test]
    fn each_command_keeps_its_memory_default_and_vm_flags_need_the_microvm() {
        let a = args(BackendKind::Microvm);
        let BackendChoice::Microvm(c) = a.choice(2048).unwrap() else {
            panic!()
        };
        assert_eq!((c.memory_mib, c.cpus), (2048, 2));
        let BackendChoice::Microvm(c) = a.choice(1024).unwrap() else {
            panic!()
        };
        assert_eq!(c.memory_mib, 1024);
        assert_eq!(
            args(BackendKind::Container).choice(1024).unwrap(),
            BackendChoice::Container
        );

        let e = BackendArgs {
            kernel: Some("/k".into()),
            ..args(BackendKind::Container)
        }
        .choice(1024)
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("only with --backend microvm"), "{e}");

        let e = BackendArgs {
            initrd: Some("/i".into()),
            ..args(BackendKind::Microvm)
        }
        .choice(1024)
        .unwrap_err();
        assert!(e.to_string().contains("--initrd needs --kernel"), "{e}");

        let e = BackendArgs {
            vm_memory: Some(100),
            ..args(BackendKind::Microvm)
        }
        .choice(1024)
        .unwrap_err();
        assert!(e.to_string().contains("256 MiB"), "{e}");
        assert_eq!(BackendKind::parse("microvm"), Some(BackendKind::Microvm));
        assert_eq!(BackendKind::parse("vm"), None);
    }
}
