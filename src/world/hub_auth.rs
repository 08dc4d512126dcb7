//! Docker Hub's token service (`auth.docker.io`), as the world serves it: the world's
//! registry (Debian's docker-registry) is configured for token authentication as Docker Hub
//! is (`WWW-Authenticate: Bearer realm="https://auth.docker.io/token",
//! service="registry.docker.io"`), and this service answers `GET /token?service=…&scope=…`
//! with a JWT the registry verifies: ES256, signed by a key made for one `world serve`
//! alone, whose self-signed certificate travels in the token's `x5c` header and is the
//! registry's `rootcertbundle`.
//!
//! As on Docker Hub, an anonymous client is granted `pull` of the repositories it names and
//! nothing more: a scope asking `pull,push` gets a token holding `pull` only, and the
//! registry refuses the push (401, insufficient scope). The key never leaves the process;
//! only the certificate is written (for the registry's configuration).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, KeyUsagePurpose};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

use crate::error::{Error, IoContext, Result};

/// The realm Docker Hub's registry names in its challenge.
pub const REALM: &str = "https://auth.docker.io/token";
/// The `service` of that challenge, and the tokens' audience.
pub const SERVICE: &str = "registry.docker.io";
/// The tokens' issuer.
pub const ISSUER: &str = "auth.docker.io";
/// How long a token is valid, in seconds (Docker Hub's `expires_in`).
pub const EXPIRES_IN: i64 = 300;

fn auth_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Environment(format!("world token service: {what}: {e}"))
}

/// The token service of one `world serve`: its signing key (in memory only) and the
/// certificate the registry trusts.
pub struct TokenService {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The signing certificate, DER (the token's `x5c`).
    cert_der: Vec<u8>,
    /// The same, PEM (the registry's `rootcertbundle`).
    pub cert_pem: String,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").finish_non_exhaustive()
    }
}

impl TokenService {
    /// A new signing key and its self-signed certificate (P-256, digital signature).
    pub fn new() -> Result<TokenService> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| auth_error("generate the signing key", e))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| auth_error("load the signing key", e))?;
        let kp = KeyPair::try_from(pkcs8.as_ref())
            .map_err(|e| auth_error("load the signing key for its certificate", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            "auth.docker.io token signer (reprobox test world)",
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let cert = params
            .self_signed(&kp)
            .map_err(|e| auth_error("sign the certificate", e))?;
        Ok(TokenService {
            key,
            rng,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        })
    }

    /// The `auth:` section of a docker-registry configuration trusting this service, its
    /// certificate written to `bundle`.
    pub fn registry_config(&self, bundle: &Path) -> Result<String> {
        std::fs::write(bundle, &self.cert_pem).ctx("write", bundle)?;
        Ok(format!(
            "auth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            bundle.display()
        ))
    }

    /// The answer to `GET /token?QUERY` at time `now` (Unix seconds): Docker Hub's JSON
    /// (`token`, `access_token`, `expires_in`, `issued_at`). Each `scope` parameter
    /// (`repository:NAME:ACTIONS`) is granted `pull` when it asks for it; anything else is
    /// left out of the token. A `service` other than [`SERVICE`] is bad input.
    pub fn answer(&self, query: &str, now: i64) -> Result<String> {
        let mut service = None;
        let mut access = Vec::new();
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            let v = crate::world::serve::percent_decode(&v.replace('+', " "))
                .ok_or_else(|| Error::bad_input(query, "a percent-encoded query"))?;
            match k {
                "service" => service = Some(v),
                "scope" => {
                    if let Some(grant) = grant(&v) {
                        access.push(grant);
                    }
                }
                _ => {}
            }
        }
        if service.as_deref() != Some(SERVICE) {
            return Err(Error::bad_input(
                query,
                format!("service={SERVICE} (the service Docker Hub's registry names)"),
            ));
        }
        let token = self.sign(&json!({
            "iss": ISSUER,
            "sub": "",
            "aud": SERVICE,
            "exp": now + EXPIRES_IN,
            "nbf": now - 1,
            "iat": now,
            "jti": hex::encode(self.random::<16>()?),
            "access": access,
        }))?;
        let issued_at = jiff::Timestamp::from_second(now)
            .map_err(|e| auth_error("the issue time", e))?
            .to_string();
        Ok(json!({
            "token": token,
            "access_token": token,
            "expires_in": EXPIRES_IN,
            "issued_at": issued_at,
        })
        .to_string())
    }

    fn random<const N: usize>(&self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        ring::rand::SecureRandom::fill(&self.rng, &mut b)
            .map_err(|e| auth_error("random bytes", e))?;
        Ok(b)
    }

    /// A compact JWS of `claims`: ES256, the signing certificate in `x5c`.
    fn sign(&self, claims: &serde_json::Value) -> Result<String> {
        let header =
            json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|e| auth_error("sign a token", e))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// What an anonymous client is granted of one scope: `pull` of a repository when asked for
/// (with or without `push`), nothing else.
fn grant(scope: &str) -> Option<serde_json::Value> {
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
    (kind == "repository" && !name.is_empty() && actions.split(',').any(|a| a == "pull"))
        .then(|| json!({"type": "repository", "name": name, "actions": ["pull"]}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn parts(token: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
        let v: Vec<&str> = token.split('.').collect();
        assert_eq!(v.len(), 3, "{token}");
        let j = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (
            j(v[0]),
            j(v[1]),
            URL_SAFE_NO_PAD.decode(v[2]).unwrap(),
            format!("{}.{}", v[0], v[1]),
        )
    }

    #[test]
    fn an_anonymous_token_grants_pull_only_and_verifies_with_its_certificate() {
        let s = TokenService::new().unwrap();
        let q = "service=registry.docker.io&scope=repository%3Aarchlinux%2Farchlinux%3Apull%2Cpush&scope=repository:library/alpine:pull&scope=registry:catalog:*";
        let a: serde_json::Value =
            serde_json::from_str(&s.answer(q, 1_800_000_000).unwrap()).unwrap();
        assert_eq!(a["token"], a["access_token"]);
        assert_eq!(a["expires_in"], EXPIRES_IN);
        assert_eq!(a["issued_at"], "2027-01-15T08:00:00Z");
        let (h, c, sig, input) = parts(a["token"].as_str().unwrap());
        assert_eq!(h["alg"], "ES256");
        assert_eq!(
            (c["iss"].as_str(), c["aud"].as_str()),
            (Some(ISSUER), Some(SERVICE))
        );
        assert_eq!(c["exp"], 1_800_000_000 + EXPIRES_IN);
        assert_eq!(
            c["access"],
            json!([
                {"type": "repository", "name": "archlinux/archlinux", "actions": ["pull"]},
                {"type": "repository", "name": "library/alpine", "actions": ["pull"]},
            ])
        );
        // The x5c certificate is the one written for the registry, and its key signed.
        let der = STANDARD.decode(h["x5c"][0].as_str().unwrap()).unwrap();
        assert_eq!(der, s.cert_der);
        let spki = ring::signature::KeyPair::public_key(&s.key)
            .as_ref()
            .to_vec();
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, spki);
        key.verify(input.as_bytes(), &sig).unwrap();
        let mut bad = input.into_bytes();
        bad[3] ^= 1;
        assert!(key.verify(&bad, &sig).is_err());
        // Two tokens differ (jti), two services have different keys.
        let b = s.answer(q, 1_800_000_000).unwrap();
        assert_ne!(a.to_string(), b);
        assert_ne!(TokenService::new().unwrap().cert_der, s.cert_der);
    }

    #[test]
    fn another_service_is_bad_input_and_a_scope_without_pull_grants_nothing() {
        let s = TokenService::new().unwrap();
        let e = s
            .answer("service=ghcr.io&scope=repository:a/b:pull", 0)
            .unwrap_err();
        assert!(e.to_string().contains("service=registry.docker.io"), "{e}");
        assert!(s.answer("scope=repository:a/b:pull", 0).is_err());
        let a: serde_json::Value = serde_json::from_str(
            &s.answer("service=registry.docker.io&scope=repository:a/b:push", 0)
                .unwrap(),
        )
        .unwrap();
        let (_, c, _, _) = parts(a["token"].as_str().unwrap());
        assert_eq!(c["access"], json!([]));
    }

    #[test]
    fn the_registry_section_names_the_real_realm_and_the_written_certificate() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenService::new().unwrap();
        let bundle = d.path().join("token.pem");
        let text = s.registry_config(&bundle).unwrap();
        assert!(
            text.contains("realm: https://auth.docker.io/token"),
            "{text}"
        );
        assert!(text.contains("service: registry.docker.io"), "{text}");
        assert!(
            text.contains(&format!("rootcertbundle: {}", bundle.display())),
            "{text}"
        );
        assert_eq!(std::fs::read_to_string(&bundle).unwrap(), s.cert_pem);
        assert!(!s.cert_pem.contains("PRIVATE"));
    }
}
