//! Digest authentication of extensions: which algorithms each one is offered, its HA1
//! per algorithm (computed once at start, so a known and an unknown user cost the same
//! per request), and the verdict on a request's credentials.
//!
//! Identity rule: the credentials' `username` must be the extension the request claims
//! to be (the To user of a REGISTER, the From user of an INVITE). Any other username is
//! treated exactly like an unknown user, so one extension's password cannot register
//! or call as another, and the answer does not reveal which names exist.

use crate::config::{self, Config, Credential};
use crate::sip::auth::{
    AuthParseError, Challenge, Credentials, DigestAlgorithm, DigestAuth, DigestRequest, Outcome,
    Rejection, ha1,
};
use crate::sip::{Known, Request};
use std::collections::HashMap;

/// What to do with a request after looking at its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Check {
    Authenticated,
    /// No usable credentials (or a nonce we cannot use): challenge. `stale` tells the
    /// client its password was right and only the nonce needs renewing.
    Challenge {
        stale: bool,
    },
    /// A real authentication failure: refuse, and count it against the source.
    Failed(Rejection),
    /// The credentials header does not parse.
    Malformed(AuthParseError),
}

struct UserKeys {
    algorithms: Vec<DigestAlgorithm>,
    /// Base HA1 (lowercase hex) for each algorithm the extension can use.
    ha1: Vec<(DigestAlgorithm, String)>,
}

pub(super) struct Authenticator {
    realm: String,
    digest: DigestAuth,
    default_algorithms: Vec<DigestAlgorithm>,
    users: HashMap<String, UserKeys>,
}

impl Authenticator {
    pub(super) fn new(
        config: &Config,
        secret: &[u8],
        nonce_lifetime_secs: u64,
        tracked_nonces: usize,
    ) -> Authenticator {
        let realm = config.sip.realm().to_owned();
        let users = config
            .extensions
            .iter()
            .map(|(name, ext)| {
                let algorithms: Vec<_> =
                    ext.auth_algorithms.iter().map(|a| algorithm(*a)).collect();
                let ha1 = match &ext.credential {
                    Some(Credential::Password(password)) => algorithms
                        .iter()
                        .map(|&alg| (alg, ha1(alg, name, &realm, password)))
                        .collect(),
                    Some(Credential::Ha1 {
                        algorithm: alg,
                        hash,
                    }) => {
                        vec![(algorithm(*alg), hex::encode(hash))]
                    }
                    // Not resolved yet (the server resolves secrets before starting):
                    // nothing can authenticate as it.
                    None => Vec::new(),
                };
                (name.clone(), UserKeys { algorithms, ha1 })
            })
            .collect();
        Authenticator {
            digest: DigestAuth::new(secret, nonce_lifetime_secs, tracked_nonces),
            default_algorithms: config
                .sip
                .auth_algorithms
                .iter()
                .map(|a| algorithm(*a))
                .collect(),
            realm,
            users,
        }
    }

    pub(super) fn is_extension(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// One challenge per algorithm offered to `user`, in the configured order: the
    /// extension's own list, or `[sip] auth_algorithms` for anyone else (unknown users
    /// get the same challenge as a known one without an override).
    pub(super) fn challenges(&self, now: u64, user: Option<&str>, stale: bool) -> Vec<Challenge> {
        let algorithms = user
            .and_then(|u| self.users.get(u))
            .map_or(&self.default_algorithms, |u| &u.algorithms);
        algorithms
            .iter()
            .map(|&alg| self.digest.challenge(now, &self.realm, alg, stale))
            .collect()
    }

    /// Checks the credentials in `header` (Authorization or Proxy-Authorization) of a
    /// request claiming to come from `user`. Headers for other realms, other schemes or
    /// algorithms we do not implement are ignored (the client may hold several).
    pub(super) fn check(
        &self,
        now: u64,
        req: &Request,
        header: Known,
        user: Option<&str>,
    ) -> Check {
        let mut malformed = None;
        let mut credentials = None;
        for value in req.headers.get_all(header) {
            match Credentials::parse(value) {
                Ok(c) if c.realm == self.realm => {
                    credentials = Some(c);
                    break;
                }
                Ok(_)
                | Err(AuthParseError::UnknownScheme(_) | AuthParseError::UnsupportedAlgorithm(_)) =>
                    {}
                Err(e) => malformed = Some(e),
            }
        }
        let Some(credentials) = credentials else {
            return match malformed {
                Some(e) => Check::Malformed(e),
                None => Check::Challenge { stale: false },
            };
        };
        let ha1 = user
            .filter(|u| *u == credentials.username)
            .and_then(|u| self.users.get(u))
            .and_then(|keys| {
                keys.ha1
                    .iter()
                    .find(|(alg, _)| *alg == credentials.algorithm)
                    .map(|(_, h)| h.as_str())
            });
        let request_uri = req.uri.to_string();
        let request = DigestRequest {
            method: req.method.as_str(),
            request_uri: &request_uri,
            realm: &self.realm,
        };
        match self.digest.authenticate(now, &credentials, &request, ha1) {
            Outcome::Authenticated => Check::Authenticated,
            Outcome::Stale => Check::Challenge { stale: true },
            // Not a guess at a password: a nonce from before a secret change, or one
            // nobody could use. A fresh challenge lets an honest client recover.
            Outcome::Rejected(Rejection::InvalidNonce | Rejection::WrongRealm) => {
                Check::Challenge { stale: false }
            }
            // The digest was right (counts are checked after it), so it is the password
            // holder, or a replay that gains nothing from a new nonce.
            Outcome::Rejected(Rejection::Replayed) => Check::Challenge { stale: true },
            Outcome::Rejected(why) => Check::Failed(why),
        }
    }
}

fn algorithm(a: config::DigestAlgorithm) -> DigestAlgorithm {
    match a {
        config::DigestAlgorithm::Md5 => DigestAlgorithm::Md5,
        config::DigestAlgorithm::Sha256 => DigestAlgorithm::Sha256,
    }
}
