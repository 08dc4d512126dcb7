//! An in-toto Statement (v1) recording what was reproduced and the whole environment.
//!
//! Subjects are the rebuilt artifacts by sha256; the predicate records the plan, the
//! verdict with its checks, the environment lock and the inputs lock (by sha256 and in
//! full), and the isolation that was enforced — enough to rerun and to audit.

use serde::Serialize;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://reprobox.dev/attestation/reproduction/v1";

#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub name: String,
    pub digest: std::collections::BTreeMap<String, String>,
}

impl Subject {
    pub fn sha256(name: impl Into<String>, hex: impl Into<String>) -> Subject {
        Subject {
            name: name.into(),
            digest: [("sha256".to_string(), hex.into())].into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Statement<P: Serialize> {
    #[serde(rename = "_type")]
    pub type_: &'static str,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: &'static str,
    pub predicate: P,
}

impl<P: Serialize> Statement<P> {
    pub fn new(subject: Vec<Subject>, predicate: P) -> Self {
        Statement {
            type_: STATEMENT_TYPE,
            subject,
            predicate_type: PREDICATE_TYPE,
            predicate,
        }
    }
}
