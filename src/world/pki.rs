//! The world's stand-in for the public web PKI: one CA per world directory, whose certificate
//! goes where real root certificates go (the world bootstrap's and the world's Alpine image's
//! CA bundles), and leaf certificates for the real host names the publisher's build reaches
//! (archive.archlinux.org, gitlab.archlinux.org, dl-cdn.alpinelinux.org, registry-1.docker.io).
//!
//! Test data, not a secret: the key is kept in `DIR/pki/ca.key` so a completed world can be
//! extended without re-issuing what was baked into images. reprobox's own run CA (src/egress)
//! is a different thing and never touches disk.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, IoContext, Result};

/// The hosts of the real build that the world serves behind their real names.
pub const HOSTS: [&str; 4] = [
    "archive.archlinux.org",
    "gitlab.archlinux.org",
    "dl-cdn.alpinelinux.org",
    "registry-1.docker.io",
];

/// The world's CA (certificate and key, PEM) in `DIR/pki/`.
pub struct WorldCa {
    pub cert_pem: String,
    key_pem: String,
    pub dir: PathBuf,
}

fn pki_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Environment(format!("world PKI: {what}: {e}"))
}

/// Valid 2020-01-01 … 2099-12-31: the builds run under clocks pinned anywhere in 2026.
fn set_validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "reprobox test world root CA");
    dn.push(DnType::OrganizationName, "reprobox test world");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params);
    params
}

impl WorldCa {
    /// Loads `world_dir/pki/ca.{pem,key}`, or makes them (once) when absent.
    pub fn load_or_create(world_dir: &Path) -> Result<WorldCa> {
        let dir = world_dir.join("pki");
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert.is_file() && key.is_file() {
            return Ok(WorldCa {
                cert_pem: std::fs::read_to_string(&cert).ctx("read", &cert)?,
                key_pem: std::fs::read_to_string(&key).ctx("read", &key)?,
                dir,
            });
        }
        std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        let kp = KeyPair::generate().map_err(|e| pki_error("generate the CA key", e))?;
        let params = ca_params();
        let c = params
            .self_signed(&kp)
            .map_err(|e| pki_error("sign the CA certificate", e))?;
        let (cert_pem, key_pem) = (c.pem(), kp.serialize_pem());
        // Key first: a certificate without its key is never left behind as "complete".
        let tmp = dir.join(".ca.key.tmp");
        std::fs::write(&tmp, &key_pem).ctx("write", &tmp)?;
        std::fs::rename(&tmp, &key).ctx("rename", &key)?;
        std::fs::write(&cert, &cert_pem).ctx("write", &cert)?;
        Ok(WorldCa {
            cert_pem,
            key_pem,
            dir,
        })
    }

    /// A leaf certificate (PEM) and its key (PEM) for `hosts`, signed by this CA.
    pub fn issue(&self, hosts: &[&str]) -> Result<(String, String)> {
        let ca_key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| pki_error("read the CA key", e))?;
        // The issuer is its name and key: the same parameters as the certificate was made with.
        let issuer = Issuer::new(ca_params(), ca_key);
        let kp = KeyPair::generate().map_err(|e| pki_error("generate a key", e))?;
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .map_err(|e| pki_error("certificate names", e))?;
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("world"),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params);
        let c = params
            .signed_by(&kp, &issuer)
            .map_err(|e| pki_error("sign a leaf certificate", e))?;
        Ok((c.pem(), kp.serialize_pem()))
    }

    /// `bundle` (a CA bundle's bytes, possibly empty) with this CA appended.
    pub fn append_to_bundle(&self, bundle: &[u8]) -> Vec<u8> {
        let mut out = bundle.to_vec();
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(self.cert_pem.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_ca_is_made_once_and_issues_leaves_for_the_real_hosts() {
        let d = tempfile::tempdir().unwrap();
        let a = WorldCa::load_or_create(d.path()).unwrap();
        let b = WorldCa::load_or_create(d.path()).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem);
        let (leaf, key) = a.issue(&HOSTS).unwrap();
        assert!(leaf.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
        assert!(a.append_to_bundle(b"x").starts_with(b"x\n-----BEGIN"));
        // The leaf chains to the CA (openssl is on every machine that builds a world).
        std::fs::write(d.path().join("leaf.pem"), &leaf).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(d.path().join("pki/ca.pem"))
            .arg(d.path().join("leaf.pem"))
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
