//! `reprobox reproduce archlinux-repro VERSION --backend microvm` end to end against the
//! world made from the real upstream (tests/reproduce_common), through the real binary: the
//! world's release reproduces in qemu microVMs (TCG on machines where KVM does not work) with
//! the default guest kernel (the archive's `linux` package of the environment's day), and its
//! rootfs and image config are the container backend's and the world's (the same bytes from
//! both backends is the point); again offline with every server stopped, the kernel package
//! from the store and the environment the container run prepared.
//!
//! Needs root (the world and the container backend), qemu-system-x86, busybox-static,
//! e2fsprogs and linux-image-amd64 (scripts/apt/vm.txt, world.txt): without them it fails
//! and says why.

mod reproduce_common;

use std::path::Path;
use std::process::Output;

use reprobox::world::WorldServers;
use reproduce_common::*;

fn reproduce(
    store: &Path,
    out: &Path,
    s: &WorldServers,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    reproduce_common::reproduce(store, out, &locations(s), extra)
}

/// Processes whose command line mentions `needle` (a qemu left behind would name its disk
/// under the output directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(c);
            }
        }
    }
    found
}

#[test]
fn the_release_reproduces_in_a_microvm_with_the_container_backends_bytes() {
    let (_, m) = world();
    // The default guest kernel: the archive's `linux` of the environment's day.
    let linux = &m.arch["packages"][&m.release.build_day]["linux"];
    let linux_sha = linux["sha256"]
        .as_str()
        .expect("a linux package in the world");
    let linux_version = linux["version"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let servers = serve();

    // 1. The container backend: the reference bytes.
    let t = std::time::Instant::now();
    let out_c = tmp.path().join("container");
    let (o, rc) = reproduce(&store, &out_c, &servers, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(rc["backend"], "container");
    assert!(rc.get("microvm").is_none(), "{rc:#}");
    let container_sha = check(&rc, "rootfs-sha256")["actual"].clone();
    assert_eq!(container_sha, m.rootfs.sha256.as_str());
    assert_eq!(
        check(&rc, "image-config-digest")["actual"],
        m.image.config_digest.as_str()
    );
    eprintln!("container backend: {:.0} s", t.elapsed().as_secs_f64());

    // 2. The microVM backend, its environment rolled back in the VM itself (--fresh-env: not
    //    the one the container run prepared): reproduced, and the same rootfs bytes and image
    //    config as the container's.
    let t = std::time::Instant::now();
    let out_v = tmp.path().join("microvm");
    let (o, rv) = reproduce(
        &store,
        &out_v,
        &servers,
        &["--backend", "microvm", "--fresh-env"],
    );
    eprintln!("microVM backend: {:.0} s", t.elapsed().as_secs_f64());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(rv["verdict"], "reproduced", "{rv:#}");
    assert_eq!(rv["backend"], "microvm");
    assert_eq!(
        check(&rv, "rootfs-sha256")["actual"],
        container_sha,
        "the microVM's rootfs differs from the container's"
    );
    assert_eq!(
        check(&rv, "image-config-digest")["actual"],
        check(&rc, "image-config-digest")["actual"]
    );
    assert_eq!(check(&rv, "image-diff-ids")["status"], "pass");

    // Nothing the build did was refused, in the guest as in the container (reproduce_e2e).
    let refusals = rv["egress"]["refusals"].as_array().unwrap();
    assert!(refusals.is_empty(), "{refusals:#?}");
    // The run record: accelerator, kernel and where it came from.
    let vm = &rv["microvm"];
    assert!(
        matches!(vm["accel"].as_str(), Some("kvm" | "tcg")),
        "{vm:#}"
    );
    assert!(!vm["accel_detail"].as_str().unwrap().is_empty());
    assert_eq!(vm["kernel_origin"]["kind"], "package", "{vm:#}");
    assert_eq!(vm["kernel_origin"]["package_sha256"], linux_sha, "{vm:#}");
    assert_eq!(vm["kernel_origin"]["package_version"], linux_version);
    let release = vm["kernel_release"].as_str().unwrap();
    assert_eq!(linux_version, format!("{}-1", release.replace('-', ".")));
    let kernel_sha = vm["kernel_sha256"].as_str().unwrap();
    assert_eq!(kernel_sha.len(), 64);
    let mut clock_pinned = Vec::new();
    for step in rv["steps"].as_array().unwrap() {
        let e = step["enforcement"].as_array().unwrap();
        // Every job of the reproduction goes through the egress, and the guest kernel (the
        // day's `linux`) watches what reaches no forwarder.
        let watch = e.iter().find(|e| e["feature"] == "unanswered-connects");
        assert!(
            watch.is_some_and(|w| w["enforced"] == true),
            "{}: {watch:?}",
            step["name"]
        );
        let vm_line = e.iter().find(|e| e["feature"] == "microvm").unwrap();
        assert!(
            vm_line["detail"].as_str().unwrap().contains(release),
            "{vm_line}"
        );
        // The profile's `faketime = true` steps (rollback, install, install-optional) get the
        // environment's libfaketime in the guest too, the clock stopped at SOURCE_DATE_EPOCH
        // (00:00 UTC of the build day).
        if ["rollback", "install", "install-optional"].contains(&step["name"].as_str().unwrap()) {
            let ft = e.iter().find(|e| e["feature"] == "faketime");
            assert!(
                ft.is_some_and(|f| f["enforced"] == true
                    && f["detail"]
                        .as_str()
                        .unwrap()
                        .contains("2026-05-20 00:00:00")),
                "{step:#}"
            );
            clock_pinned.push(step["name"].as_str().unwrap());
        }
    }
    assert_eq!(
        clock_pinned,
        ["rollback", "install", "install-optional"],
        "{rv:#}"
    );
    let summary = std::fs::read_to_string(out_v.join("summary.txt")).unwrap();
    assert!(summary.contains("backend microvm"), "{summary}");
    assert!(summary.contains(&format!("kernel {release}")), "{summary}");
    let att: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_v.join("attestation.json")).unwrap()).unwrap();
    assert_eq!(att["predicate"]["backend"], "microvm", "{att:#}");
    assert_eq!(att["predicate"]["microvm"]["kernel_release"], release);
    // The environment lock was read from the VM's root disk: the environment day's (the
    // build day's) devtools.
    let env_lock = std::fs::read_to_string(out_v.join("env.lock")).unwrap();
    let devtools = m.arch["env_per_day"][&m.release.build_day]["devtools"]
        .as_str()
        .unwrap_or_else(|| panic!("no devtools on {} in the world", m.release.build_day));
    assert!(
        env_lock.contains(&format!("name = \"devtools\"\nversion = \"{devtools}\"")),
        "{env_lock}"
    );
    // Nothing left behind: no qemu, no work directory.
    assert!(work_dirs(&out_v).is_empty(), "{:?}", work_dirs(&out_v));
    let left = processes_mentioning(&out_v.to_string_lossy());
    assert!(left.is_empty(), "processes left: {left:?}");

    // 3. Every server stopped, --offline: the run reproduces the same bytes without a single
    //    fetch.
    let locations = locations(&servers);
    drop(servers);
    let t = std::time::Instant::now();
    let out_o = tmp.path().join("microvm-offline");
    let (o, ro) = reproduce_common::reproduce(
        &store,
        &out_o,
        &locations,
        &["--backend", "microvm", "--offline"],
    );
    eprintln!(
        "microVM backend, offline: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ro["verdict"], "reproduced", "{ro:#}");
    assert_eq!(check(&ro, "rootfs-sha256")["actual"], container_sha);
    assert_eq!(
        check(&ro, "image-config-digest")["actual"],
        m.image.config_digest.as_str()
    );
    assert_eq!(ro["microvm"]["kernel_sha256"], kernel_sha);
    assert_eq!(ro["microvm"]["kernel_origin"]["package_sha256"], linux_sha);
    let lock = std::fs::read_to_string(out_o.join("inputs.lock")).unwrap();
    // Every request, the build's own through the egress included (`egress POLICY STATUS …`),
    // is a hit; the only misses are the days' database signatures, which the archive does
    // not have.
    let entries: Vec<Vec<&str>> = lock
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f[0] == "egress" { f[2..].to_vec() } else { f }
        })
        .collect();
    assert!(entries.iter().any(|f| f[0] == "hit"), "{lock}");
    assert!(
        entries
            .iter()
            .all(|f| f[0] == "hit" || (f[0] == "miss" && f[4].ends_with(".db.sig"))),
        "an offline run fetched something:\n{lock}"
    );
    assert!(lock.contains(linux_sha), "{lock}");
    // This run took the environment the container run prepared, as it is: its steps did
    // not run again, its lock is the one recorded then, and nothing was written into it
    // (the pinned-registry file went onto the VM's disk only).
    let cached: Vec<&str> = ro["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("cached").is_some())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cached,
        ["rollback", "install", "install-optional"],
        "{ro:#}"
    );
    let envs = prepared_envs(&store);
    assert_eq!(envs.len(), 1, "{envs:?}");
    let pinned_conf = "root/etc/containers/registries.conf.d/90-reprobox-pinned.conf";
    assert!(
        !envs[0].join(pinned_conf).exists(),
        "the run wrote into the prepared environment"
    );
    let env_lock_c = std::fs::read_to_string(out_c.join("env.lock")).unwrap();
    assert_eq!(
        std::fs::read_to_string(out_o.join("env.lock")).unwrap(),
        env_lock_c
    );
    assert_eq!(env_lock, env_lock_c);

    // 4. Bad input and a missing kernel: exit 2 and 3, nothing left behind.
    let out_b = tmp.path().join("bad");
    let (o, _) = reproduce_common::reproduce(&store, &out_b, &locations, &["--kernel", "/boot/x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--backend microvm"), "{}", stderr(&o));
    let (o, _) = reproduce_common::reproduce(
        &store,
        &out_b,
        &locations,
        &[
            "--backend",
            "microvm",
            "--offline",
            "--kernel",
            "/nonexistent/vmlinuz",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/nonexistent/vmlinuz"),
        "{}",
        stderr(&o)
    );
    assert!(work_dirs(&out_b).is_empty(), "{:?}", work_dirs(&out_b));
}
