//! The run's own certificate authority: a key pair made in memory when the run starts,
//! never serialised, and a leaf certificate per mapped host signed by it. Only the CA
//! certificate (PEM) leaves this module; the keys live as long as the run's `Egress`.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// The run's CA: its certificate and its issuer (holding the private key in memory).
pub(crate) struct RunCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Environment(format!("egress CA: {what}: {e}"))
}

impl RunCa {
    /// A fresh CA, valid from the Unix epoch until thirty days from now: a microVM job's
    /// wall clock is the build time (SOURCE_DATE_EPOCH, docs/vm.md), months or years ago, and
    /// its TLS clients check validity against it; the key never leaves this run's memory.
    pub(crate) fn new() -> Result<RunCa> {
        let key = KeyPair::generate().map_err(|e| ca_error("generate a key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "reprobox egress CA (this run only)");
        dn.push(DnType::OrganizationName, "reprobox");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params);
        let issuer = CertifiedIssuer::self_signed(params, key)
            .map_err(|e| ca_error("sign the CA certificate", e))?;
        Ok(RunCa { issuer })
    }

    /// The CA certificate, PEM.
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `host` signed by this CA, with its key, ready for rustls.
    pub(crate) fn leaf(&self, host: &str, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>> {
        let key = KeyPair::generate().map_err(|e| ca_error("generate a key", e))?;
        let mut params = CertificateParams::new(vec![host.to_string()])
            .map_err(|e| ca_error(&format!("certificate for {host}"), e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, host.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| ca_error(&format!("sign the certificate for {host}"), e))?;
        let chain = vec![cert.der().clone(), self.issuer.der().clone()];
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        CertifiedKey::from_der(chain, der, provider)
            .map(Arc::new)
            .map_err(|e| ca_error(&format!("load the key for {host}"), e))
    }

    /// The CA certificate, DER (tests verify leaves against it).
    #[cfg(test)]
    pub(crate) fn der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.issuer.der().clone()
    }
}

/// Valid from 1970-01-01 (any build time a job's clock can be set to) until thirty days
/// from now.
fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = time::OffsetDateTime::UNIX_EPOCH;
    params.not_after = now + time::Duration::days(30);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn two_cas_differ_and_leaves_chain_to_theirs() {
        let a = RunCa::new().unwrap();
        let b = RunCa::new().unwrap();
        assert_ne!(a.pem(), b.pem());
        assert!(a.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!a.pem().contains("PRIVATE KEY"));
        let provider = rustls::crypto::ring::default_provider();
        let leaf = a.leaf("archive.archlinux.org", &provider).unwrap();
        assert_eq!(leaf.cert.len(), 2);
        assert_eq!(leaf.cert[1], a.der());
        // The leaf verifies against this CA, not the other one.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(a.der()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(provider.clone()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("archive.archlinux.org").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_server_cert(&leaf.cert[0], &[], &name, &[], now)
            .unwrap();
        // A guest whose clock is an old build time (a microVM job) accepts it too.
        let build_time = rustls::pki_types::UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(1_000_000_000),
        );
        verifier
            .verify_server_cert(&leaf.cert[0], &[], &name, &[], build_time)
            .unwrap();
        let mut other = rustls::RootCertStore::empty();
        other.add(b.der()).unwrap();
        let v2 = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(other),
            Arc::new(provider),
        )
        .build()
        .unwrap();
        assert!(
            v2.verify_server_cert(&leaf.cert[0], &[], &name, &[], now)
                .is_err()
        );
    }
}
