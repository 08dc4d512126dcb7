//! The world's release, made the way upstream's CI makes one (`.gitlab-ci.yml` of the source
//! revision) and outside reprobox: the `rootfs` job, `pre-release` (upload to the generic
//! package registry, the Dockerfile regenerated with the download line and the group title,
//! committed to `releases` and tagged) and `image:publish:secure` (podman build with
//! `--source-date-epoch … --rewrite-timestamp`, pushed to docker.io).
//!
//! Each job runs in a fresh copy of the world's build environment (standing in for the
//! `archlinux/archlinux:latest` image of the build day: the bootstrap of the month rolled to
//! the build day's repositories, which stand in for the live mirrors of that day), with the
//! real host names served on the job's own loopback over HTTPS by [`PublisherNet`].
//! The upstream scripts run unmodified, from a clone of the world's repository.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::world::env_rootfs::{self, EnvRun, TlsFront};
use crate::world::from_upstream::Release;
use crate::world::gitlab;
use crate::world::pki::WorldCa;

/// Where the jobs check the project out (`$CI_PROJECT_DIR`); reprobox uses the same path
/// for its workspace, which keeps paths in logs comparable (no path reaches the artifacts).
pub const PROJECT_DIR: &str = crate::plan::WORKSPACE;

/// What the `rootfs` job left, and what the later jobs need.
#[derive(Debug, Clone)]
pub struct RootfsJob {
    /// `output/` of the job: repro.tar.zst, repro.tar.zst.SHA256, Dockerfile.repro.
    pub output: PathBuf,
    pub sha256: String,
    /// `name version` of every package of the job's environment (`pacman -Q`).
    pub env_packages: Vec<String>,
}

/// The image the publish job pushed.
#[derive(Debug, Clone)]
pub struct Published {
    /// `sha256:…` of the built image's config (podman's image id).
    pub config_digest: String,
}

/// The commands that make a fresh environment the CI image of the build day: the mirrors of
/// that day, an initialised keyring (the real image has one), then the job's own
/// `before_script`.
fn ci_image_prelude(r: &Release) -> String {
    format!(
        "set -e; \
         printf 'Server = https://archive.archlinux.org/repos/{day}/$repo/os/$arch\\n' > /etc/pacman.d/mirrorlist; \
         pacman-key --init >&2; pacman-key --populate archlinux >&2; ",
        day = r.build_day
    )
}

/// `git clone` of the world's repository over HTTPS and a checkout of `rev`, as a runner
/// fetches `$CI_COMMIT_SHA`.
fn checkout(rev: &str) -> String {
    format!(
        "git config --global --add safe.directory {PROJECT_DIR}; \
         git clone -q https://gitlab.archlinux.org/{repo} {PROJECT_DIR} >&2; \
         cd {PROJECT_DIR}; git -c advice.detachedHead=false checkout -q {rev}; ",
        repo = gitlab::REPO_PATH
    )
}

/// [`checkout`] from the world's repository bound at [`LOCAL_REPO`] in the job.
fn checkout_local(rev: &str) -> String {
    format!(
        "git config --global --add safe.directory {PROJECT_DIR}; \
         git config --global --add safe.directory {LOCAL_REPO}; \
         git clone -q --no-hardlinks {LOCAL_REPO} {PROJECT_DIR} >&2; \
         cd {PROJECT_DIR}; git -c advice.detachedHead=false checkout -q {rev}; "
    )
}

/// Where [`republish`] binds the world's repository in its job, to clone from.
const LOCAL_REPO: &str = "/srv/archlinux-docker.git";

/// The `rootfs` job for GROUP=repro: `before_script` then `make $PWD/output/Dockerfile.repro`
/// with BUILD_VERSION from `get_version`'s dotenv. The Makefile's ARCHIVE_SNAPSHOT and
/// SOURCE_DATE_EPOCH defaults come from the clock (`date -d "-1 day"`, `date -d 00:00:00`);
/// the world passes the values they have on the build day instead of faking the clock.
/// `repos_day` is the ARCHIVE_SNAPSHOT given to make, the day whose repositories
/// make-rootfs.sh's pacman installs from: the release's snapshot day, or for the world's
/// next-day release the build day (upstream's 20260420–20260423 releases were built from
/// the live mirrors of their build day, not from their snapshot).
pub fn rootfs_job(
    r: &Release,
    repos_day: &str,
    net: &PublisherNet,
    iso_tarball: &Path,
    work: &Path,
) -> Result<RootfsJob> {
    let root = env_rootfs::unpack_bootstrap(iso_tarball, work)?;
    let mut run = net.run(&root);
    run.env.push(("BUILD_VERSION".into(), r.version.clone()));
    let listing = run.sh(
        "the rootfs job (upstream's .gitlab-ci.yml, GROUP=repro)",
        &format!(
            "{prelude}\
             pacman -Syu --noconfirm git make fakechroot fakeroot >&2; \
             pacman -Sdd --noconfirm devtools >&2; \
             {checkout}\
             make ARCHIVE_SNAPSHOT={snapshot} SOURCE_DATE_EPOCH={sde} $PWD/output/Dockerfile.repro >&2; \
             pacman -Q",
            prelude = ci_image_prelude(r),
            checkout = checkout(&r.source_revision),
            snapshot = repos_day,
            sde = r.source_date_epoch,
        ),
    )?;
    let ws = root.join(PROJECT_DIR.trim_start_matches('/'));
    let output = ws.join("output");
    let sha_file = output.join("repro.tar.zst.SHA256");
    let text = std::fs::read_to_string(&sha_file).ctx("read", &sha_file)?;
    let sha256 = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let actual = crate::digest::sha256_file(&output.join("repro.tar.zst"))?;
    if sha256 != actual {
        return Err(Error::Environment(format!(
            "world: {} says {sha256} but the file hashes to {actual}",
            sha_file.display()
        )));
    }
    Ok(RootfsJob {
        output,
        sha256,
        env_packages: String::from_utf8_lossy(&listing)
            .lines()
            .map(String::from)
            .collect(),
    })
}

/// `pre-release` for the repro group: rename the artifacts to `repro-VERSION.tar.zst(.SHA256)`,
/// upload them to the generic package registry (files under the world's gitlab root),
/// regenerate the Dockerfile with the curl download line and the group title, drop its COPY
/// line, and commit it to `releases`, tagged `vVERSION`. Returns (Dockerfile bytes, tag commit).
pub fn pre_release(
    r: &Release,
    job: &RootfsJob,
    env_root: &Path,
    gitlab_root: &Path,
    work: &Path,
) -> Result<(Vec<u8>, String)> {
    let rootfs_file = format!("repro-{}.tar.zst", r.version);
    let registry_url = format!(
        "https://gitlab.archlinux.org/{}/{}",
        gitlab::PACKAGES_PATH,
        r.version
    );
    // The job's own script, in the rootfs job's checkout (the same source revision).
    let mut run = EnvRun::new(env_root, true);
    run.cwd = PROJECT_DIR.into();
    run.env = vec![
        ("BUILD_VERSION".into(), r.version.clone()),
        ("CI_COMMIT_SHA".into(), r.source_revision.clone()),
    ];
    run.sh(
        "pre-release (upstream's .gitlab-ci.yml)",
        &format!(
            "set -e; group=repro; rootfs_file={rootfs_file}; \
             mv output/$group.tar.zst output/$rootfs_file; \
             mv output/$group.tar.zst.SHA256 output/$rootfs_file.SHA256; \
             sed -i \"s|$group.tar.zst|$rootfs_file|\" output/$rootfs_file.SHA256; \
             bash ./scripts/make-dockerfile.sh \"$rootfs_file\" \"$group\" output \"curl -sOJL \\\"{registry_url}/$rootfs_file\\\"\" \"$group\" {sde} >&2; \
             sed -i \"/^COPY $rootfs_file \\/$/d\" output/Dockerfile.$group",
            sde = r.source_date_epoch,
        ),
    )?;
    let pkg = gitlab::package_dir(gitlab_root, &r.version);
    std::fs::create_dir_all(&pkg).ctx("create directory", &pkg)?;
    for f in [rootfs_file.clone(), format!("{rootfs_file}.SHA256")] {
        let tmp = pkg.join(format!(".{f}.tmp"));
        std::fs::copy(job.output.join(&f), &tmp).ctx("copy", job.output.join(&f))?;
        std::fs::rename(&tmp, pkg.join(&f)).ctx("rename", pkg.join(&f))?;
    }
    let dockerfile_path = job.output.join("Dockerfile.repro");
    let dockerfile = std::fs::read(&dockerfile_path).ctx("read", &dockerfile_path)?;
    let bare = gitlab::bare_repo(gitlab_root);
    let tag_commit = gitlab::release_commit(
        &bare,
        &r.version,
        &[("Dockerfile.repro", dockerfile.clone())],
        &r.release_time,
        work,
    )?;
    Ok((dockerfile, tag_commit))
}

/// `image:publish:secure` for GROUP=repro, pushing to docker.io only: a fresh CI image with
/// `pacman -Syu podman`, a checkout of the tag, `podman build --source-date-epoch=SDE
/// --rewrite-timestamp -f Dockerfile.repro -t archlinux:repro-V .`, then `podman tag` and
/// `podman push` of `docker.io/archlinux/archlinux:repro-V` and `:repro`.
pub fn publish_job(
    r: &Release,
    net: &PublisherNet,
    iso_tarball: &Path,
    work: &Path,
) -> Result<Published> {
    publish_job_pushing(r, net, iso_tarball, work, None, "")
}

/// [`publish_job`] with `push_flags` added to its `podman push` (e.g. `--compression-format
/// zstd:chunked`): a publisher whose podman pushes another way. With `local_repo` (the
/// world's bare repository) the job clones from it, bound into the job, instead of over
/// HTTPS: the same commits, without git's dumb HTTP protocol walking every object (minutes).
fn publish_job_pushing(
    r: &Release,
    net: &PublisherNet,
    iso_tarball: &Path,
    work: &Path,
    local_repo: Option<&Path>,
    push_flags: &str,
) -> Result<Published> {
    let root = env_rootfs::unpack_bootstrap(iso_tarball, work)?;
    configure_podman(&root)?;
    let mut run = net.run(&root);
    let v = &r.version;
    let checkout = match local_repo {
        Some(repo) => {
            let inside = root.join(LOCAL_REPO.trim_start_matches('/'));
            std::fs::create_dir_all(&inside).ctx("create directory", &inside)?;
            run.binds.push((repo.to_path_buf(), LOCAL_REPO.into()));
            checkout_local(&format!("v{v}"))
        }
        None => checkout(&format!("v{v}")),
    };
    run.env.push(("BUILDAH_ISOLATION".into(), "chroot".into()));
    // podman reads the cgroup hierarchy's type from /sys (a CI machine has one).
    run.binds.push((PathBuf::from("/sys"), "/sys".into()));
    let out = run.sh(
        "image:publish:secure (upstream's .gitlab-ci.yml, GROUP=repro)",
        &format!(
            "{prelude}\
             pacman -Syu --noconfirm podman >&2; \
             {checkout}\
             podman build --source-date-epoch={sde} --rewrite-timestamp -f {PROJECT_DIR}/Dockerfile.repro -t archlinux:repro-{v} {PROJECT_DIR} >&2; \
             for t in repro repro-{v}; do podman tag archlinux:repro-{v} docker.io/archlinux/archlinux:$t; podman push -q {push_flags} docker.io/archlinux/archlinux:$t >&2; done; \
             podman image inspect --format '{{{{.Id}}}}' archlinux:repro-{v}",
            prelude = ci_image_prelude(r),
            sde = r.source_date_epoch,
        ),
    )?;
    let id = String::from_utf8_lossy(&out).trim().to_string();
    if id.len() != 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Environment(format!(
            "world: podman printed {id:?} as the image id"
        )));
    }
    Ok(Published {
        config_digest: format!("sha256:{id}"),
    })
}

/// The network of a publishing job: the real host names on the job's own loopback, over
/// HTTPS with the world CA's certificates (each host its own loopback address, its TLS
/// front's leaf kept in `DIR/work/tls/`), in front of the world's files and registry.
pub struct PublisherNet {
    services: env_rootfs::Services,
}

/// Plain servers behind the fronts, on the job's loopback.
const GITLAB_ADDR: &str = "127.0.0.1:7880";
const ALPINE_ADDR: &str = "127.0.0.1:7881";

impl PublisherNet {
    /// The hosts of the real build for the world in `world`, with Docker Hub's registry
    /// over `storage`.
    pub fn new(world: &Path, ca: &WorldCa, storage: &Path) -> Result<PublisherNet> {
        Self::with_work(world, &world.join("work"), ca, storage)
    }

    /// [`PublisherNet::new`] with its TLS leaves and registry configuration in `work`.
    pub fn with_work(
        world: &Path,
        work: &Path,
        ca: &WorldCa,
        storage: &Path,
    ) -> Result<PublisherNet> {
        let tls_dir = work.join("tls");
        // Behind its TLS front the registry must say `https://registry-1.docker.io` in the
        // upload locations it returns, not the plain address it listens on.
        std::fs::create_dir_all(work).ctx("create directory", work)?;
        let registry_config = work.join("registry-publish.yml");
        std::fs::create_dir_all(storage).ctx("create directory", storage)?;
        let text = crate::world::registry::config_text(storage, env_rootfs::REGISTRY_ADDR)
            + "  host: https://registry-1.docker.io\n";
        std::fs::write(&registry_config, text).ctx("write", &registry_config)?;
        let archive = env_rootfs::archive_addr();
        let mut tls = Vec::new();
        for (host, ip, backend) in [
            (
                crate::world::arch::ARCHIVE_HOST,
                crate::world::arch::ARCHIVE_TLS_IP,
                archive.as_str(),
            ),
            ("gitlab.archlinux.org", "127.0.0.3", GITLAB_ADDR),
            ("dl-cdn.alpinelinux.org", "127.0.0.4", ALPINE_ADDR),
            (
                "registry-1.docker.io",
                "127.0.0.5",
                env_rootfs::REGISTRY_ADDR,
            ),
        ] {
            tls.push(TlsFront::issue(ca, &tls_dir, host, ip, backend)?);
        }
        Ok(PublisherNet {
            services: env_rootfs::Services {
                archive: Some(world.join("archive")),
                registry: Some(registry_config),
                tls,
                files: vec![
                    (world.join("gitlab"), GITLAB_ADDR.into()),
                    (world.join("alpine"), ALPINE_ADDR.into()),
                ],
            },
        })
    }

    /// A runner for `root` with the world's hosts served in its network namespace.
    pub fn run(&self, root: &Path) -> EnvRun {
        let mut run = EnvRun::new(root, true);
        run.services = self.services.clone();
        run
    }
}

/// The podman configuration of the publishing job's machine. Upstream's runs on a VM with
/// podman's defaults; the world's job runs in bwrap on this host, where podman needs the
/// vfs driver, cgroupfs and chroot isolation (written into the job's own copy of the
/// environment, as a CI machine's configuration is).
fn configure_podman(root: &Path) -> Result<()> {
    for (path, text) in [
        (
            "etc/containers/storage.conf",
            "[storage]\ndriver = \"vfs\"\nrunroot = \"/run/containers/storage\"\ngraphroot = \"/var/lib/containers/storage\"\n",
        ),
        (
            "etc/containers/containers.conf.d/90-world-publisher.conf",
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        ),
    ] {
        let p = root.join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).ctx("create directory", d)?;
        }
        std::fs::write(&p, text).ctx("write", &p)?;
    }
    Ok(())
}

/// The world's release published again, as a publisher whose podman pushes with
/// `push_flags` (e.g. `--compression-format zstd:chunked`) would have: Docker Hub's storage
/// copied into `storage` without the release's repository (so no blob of the first push is
/// reused), then the publish job — the same `podman build` of the tag, a fresh environment —
/// pushing with those flags (cloning the world's repository from a bind of it rather than
/// over HTTPS). The image is the same (its config digest is checked against
/// the world's); its manifest and compressed layers are this push's. `work` holds the job's
/// root while it runs. Returns the pushed image's record.
pub fn republish(
    world: &Path,
    m: &crate::world::from_upstream::UpstreamWorld,
    storage: &Path,
    work: &Path,
    push_flags: &str,
) -> Result<crate::world::registry::ImageRecord> {
    use crate::world::registry::{IMAGE_REPO, read_image};
    crate::world::tools::run(
        "copy the world's registry",
        std::process::Command::new("cp")
            .arg("-a")
            .arg(world.join("registry"))
            .arg(storage),
    )?;
    let repo = storage
        .join("docker/registry/v2/repositories")
        .join(IMAGE_REPO);
    env_rootfs::remove_tree(&repo)?;
    let iso = m.arch["bootstraps"][0]["path"]
        .as_str()
        .ok_or_else(|| Error::Environment("world: world.json names no bootstrap".into()))?;
    let ca = WorldCa::load_or_create(world)?;
    let net = PublisherNet::with_work(world, &work.join("net"), &ca, storage)?;
    let job_work = work.join("publish-job");
    let pushed = publish_job_pushing(
        &m.release,
        &net,
        &world.join("archive").join(iso),
        &job_work,
        Some(&gitlab::bare_repo(&world.join("gitlab"))),
        push_flags,
    )?;
    env_rootfs::remove_tree(&job_work)?;
    let image = read_image(storage, IMAGE_REPO, &format!("repro-{}", m.release.version))?;
    if image.config_digest != pushed.config_digest || image.config_digest != m.image.config_digest {
        return Err(Error::Environment(format!(
            "world: republished config {} (podman built {}), the world's is {}",
            image.config_digest, pushed.config_digest, m.image.config_digest
        )));
    }
    Ok(image)
}
