//! `userPassword` hashes as OpenLDAP writes them, for the embedded
//! directory: parse once when the LDIF is loaded ([`PasswordHash::parse`]),
//! verify in constant time at every login ([`PasswordHash::verify`]).
//!
//! Schemes (the `{SCHEME}` prefix is case-insensitive):
//! - `{ARGON2}` — a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`),
//!   as OpenLDAP's `argon2` module writes it; argon2i, argon2d and
//!   argon2id. [`hash_argon2`] creates such values.
//! - `{SSHA}`, `{SSHA256}`, `{SSHA512}` — base64 of `SHA(password ‖ salt) ‖
//!   salt` (`slappasswd`, and the `pw-sha2` module for the SHA-2 ones).
//! - `{SHA}` — unsalted SHA-1, accepted for old directories only.
//!
//! `{CRYPT}` (the C library's `crypt(3)`, whose meaning depends on the
//! host), `{MD5}`/`{SMD5}`, `{CLEARTEXT}` and plain text values are refused
//! with [`PasswordError::UnsupportedScheme`]: such a user cannot log in
//! until the administrator sets a supported hash.

use std::fmt;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq as _;

/// The largest Argon2 memory cost (KiB) a stored hash may ask for: 1 GiB.
/// A larger value would let one directory entry exhaust addrd's memory at
/// every login attempt.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

/// The largest Argon2 time cost (passes) a stored hash may ask for.
pub const MAX_ARGON2_TIME_COST: u32 = 64;

/// Salt bytes of a created `{ARGON2}` hash (the PHC recommendation).
const ARGON2_SALT_LEN: usize = 16;

/// A stored password hash, parsed. Its `Debug` names the scheme only.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    kind: HashKind,
}

#[derive(Clone, PartialEq, Eq)]
enum HashKind {
    /// The whole PHC string, validated by [`PasswordHash::parse`].
    Argon2(String),
    /// A salted (or, for `{SHA}`, unsalted) SHA digest.
    Sha {
        algorithm: ShaAlgorithm,
        digest: Vec<u8>,
        salt: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShaAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl ShaAlgorithm {
    const fn digest_len(self) -> usize {
        match self {
            ShaAlgorithm::Sha1 => 20,
            ShaAlgorithm::Sha256 => 32,
            ShaAlgorithm::Sha512 => 64,
        }
    }

    fn digest(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
        match self {
            ShaAlgorithm::Sha1 => Sha1::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize()
                .to_vec(),
            ShaAlgorithm::Sha256 => Sha256::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize()
                .to_vec(),
            ShaAlgorithm::Sha512 => Sha512::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize()
                .to_vec(),
        }
    }
}

/// A stored password value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The value has no `{SCHEME}` prefix, or names a scheme this
    /// directory does not verify.
    #[error("unsupported password scheme {0:?}")]
    UnsupportedScheme(String),
    /// The value after the prefix is not what the scheme requires.
    #[error("malformed {scheme} hash: {problem}")]
    Malformed {
        /// The scheme, e.g. `{SSHA}`.
        scheme: &'static str,
        /// What is wrong (never the value itself).
        problem: &'static str,
    },
    /// Hashing a new password failed.
    #[error("hashing failed: {0}")]
    Hashing(String),
}

impl PasswordHash {
    /// Parse a `userPassword` value.
    pub fn parse(stored: &str) -> Result<Self, PasswordError> {
        let stored = stored.trim();
        let Some(rest) = stored.strip_prefix('{') else {
            return Err(PasswordError::UnsupportedScheme("(none)".to_owned()));
        };
        let Some((scheme, value)) = rest.split_once('}') else {
            return Err(PasswordError::UnsupportedScheme("(none)".to_owned()));
        };
        let upper = scheme.to_ascii_uppercase();
        let algorithm = match upper.as_str() {
            "ARGON2" => return parse_argon2(value),
            "SSHA" | "SHA" => ShaAlgorithm::Sha1,
            "SSHA256" | "SHA256" => ShaAlgorithm::Sha256,
            "SSHA512" | "SHA512" => ShaAlgorithm::Sha512,
            _ => {
                let mut shown: String = scheme.chars().take(32).collect();
                shown.retain(|c| !c.is_control());
                return Err(PasswordError::UnsupportedScheme(format!("{{{shown}}}")));
            }
        };
        let salted = upper.starts_with("SSHA");
        let scheme_name = scheme_name(algorithm, salted);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| PasswordError::Malformed {
                scheme: scheme_name,
                problem: "not base64",
            })?;
        let len = algorithm.digest_len();
        let (digest, salt) = match (raw.get(..len), raw.get(len..)) {
            (Some(digest), Some(salt)) => (digest.to_vec(), salt.to_vec()),
            _ => {
                return Err(PasswordError::Malformed {
                    scheme: scheme_name,
                    problem: "shorter than the digest",
                })
            }
        };
        if salted && salt.is_empty() {
            return Err(PasswordError::Malformed {
                scheme: scheme_name,
                problem: "no salt",
            });
        }
        if !salted && !salt.is_empty() {
            return Err(PasswordError::Malformed {
                scheme: scheme_name,
                problem: "longer than the digest",
            });
        }
        Ok(PasswordHash {
            kind: HashKind::Sha {
                algorithm,
                digest,
                salt,
            },
        })
    }

    /// Whether `password` matches. Constant time in the password and the
    /// hash: the digest comparison does not stop at the first difference.
    /// CPU-heavy for `{ARGON2}`: call it from a blocking thread.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.kind {
            HashKind::Sha {
                algorithm,
                digest,
                salt,
            } => bool::from(algorithm.digest(password, salt).ct_eq(digest)),
            HashKind::Argon2(phc) => match argon2::PasswordHash::new(phc) {
                // The crate compares the outputs in constant time.
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok(),
                Err(_) => false,
            },
        }
    }

    /// The scheme, e.g. `{SSHA}`, for logs.
    pub fn scheme(&self) -> &'static str {
        match &self.kind {
            HashKind::Argon2(_) => "{ARGON2}",
            HashKind::Sha {
                algorithm, salt, ..
            } => scheme_name(*algorithm, !salt.is_empty()),
        }
    }

    /// What a verification costs, as a comparable key: the scheme with its
    /// parameters (Argon2) or salt length (SHA), never the salt or digest.
    pub fn cost_class(&self) -> String {
        match &self.kind {
            HashKind::Sha { salt, .. } => format!("{} salt={}", self.scheme(), salt.len()),
            HashKind::Argon2(phc) => {
                let params: Vec<&str> = phc.split('$').take(4).collect();
                format!("{{ARGON2}}{}", params.join("$"))
            }
        }
    }

    /// A hash of a random password that costs as much to verify as this
    /// one (same scheme, parameters and salt length): what an unknown user's
    /// login is checked against, so it takes as long as a wrong password.
    pub fn dummy_like(&self) -> Result<PasswordHash, PasswordError> {
        let mut password = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut password[..]);
        match &self.kind {
            HashKind::Sha {
                algorithm, salt, ..
            } => {
                let mut dummy_salt = vec![0u8; salt.len()];
                rand::Rng::fill(&mut rand::thread_rng(), dummy_salt.as_mut_slice());
                Ok(PasswordHash {
                    kind: HashKind::Sha {
                        algorithm: *algorithm,
                        digest: algorithm.digest(&password, &dummy_salt),
                        salt: dummy_salt,
                    },
                })
            }
            HashKind::Argon2(phc) => {
                let parsed = argon2::PasswordHash::new(phc)
                    .map_err(|e| PasswordError::Hashing(e.to_string()))?;
                let algorithm = argon2::Algorithm::try_from(parsed.algorithm)
                    .map_err(|e| PasswordError::Hashing(e.to_string()))?;
                let params = argon2::Params::try_from(&parsed)
                    .map_err(|e| PasswordError::Hashing(e.to_string()))?;
                let version = parsed
                    .version
                    .map(argon2::Version::try_from)
                    .transpose()
                    .map_err(|e| PasswordError::Hashing(e.to_string()))?
                    .unwrap_or_default();
                let hasher = argon2::Argon2::new(algorithm, version, params);
                let value = hash_with(&hasher, &password)?;
                PasswordHash::parse(&value)
            }
        }
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PasswordHash").field(&self.scheme()).finish()
    }
}

fn scheme_name(algorithm: ShaAlgorithm, salted: bool) -> &'static str {
    match (algorithm, salted) {
        (ShaAlgorithm::Sha1, true) => "{SSHA}",
        (ShaAlgorithm::Sha1, false) => "{SHA}",
        (ShaAlgorithm::Sha256, true) => "{SSHA256}",
        (ShaAlgorithm::Sha256, false) => "{SHA256}",
        (ShaAlgorithm::Sha512, true) => "{SSHA512}",
        (ShaAlgorithm::Sha512, false) => "{SHA512}",
    }
}

fn parse_argon2(phc: &str) -> Result<PasswordHash, PasswordError> {
    let malformed = |problem| PasswordError::Malformed {
        scheme: "{ARGON2}",
        problem,
    };
    let parsed = argon2::PasswordHash::new(phc).map_err(|_| malformed("not a PHC string"))?;
    argon2::Algorithm::try_from(parsed.algorithm)
        .map_err(|_| malformed("not an Argon2 variant"))?;
    if parsed.hash.is_none() {
        return Err(malformed("no hash"));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|_| malformed("bad parameters"))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err(malformed("memory cost above 1 GiB"));
    }
    if params.t_cost() > MAX_ARGON2_TIME_COST {
        return Err(malformed("time cost above 64"));
    }
    if let Some(version) = parsed.version {
        argon2::Version::try_from(version).map_err(|_| malformed("unknown version"))?;
    }
    Ok(PasswordHash {
        kind: HashKind::Argon2(phc.to_owned()),
    })
}

/// Parameters of a new `{ARGON2}` hash (argon2id, version 0x13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub time_cost: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// 64 MiB, 2 passes, 1 lane: libsodium's "interactive" limits, above
    /// the OWASP minimum (19 MiB, 2 passes). (Debian's slappasswd with the
    /// argon2 module writes argon2i, 4 MiB, 3 passes; both verify here.)
    fn default() -> Self {
        Argon2Params {
            memory_kib: 64 * 1024,
            time_cost: 2,
            parallelism: 1,
        }
    }
}

/// Hash `password` as an `{ARGON2}` `userPassword` value (argon2id,
/// version 0x13, a random 16-byte salt): what `slappasswd -h {ARGON2}`
/// writes, verifiable by OpenLDAP's `argon2` module and by
/// [`PasswordHash::verify`].
pub fn hash_argon2(password: &[u8], params: Argon2Params) -> Result<String, PasswordError> {
    let params = argon2::Params::new(
        params.memory_kib,
        params.time_cost,
        params.parallelism,
        None,
    )
    .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    hash_with(&hasher, password)
}

fn hash_with(hasher: &argon2::Argon2<'_>, password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; ARGON2_SALT_LEN];
    rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hashing(e.to_string()))?;
    let phc = hasher
        .hash_password(password, &salt)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(format!("{{ARGON2}}{phc}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from independent implementations, generated once:
    // `slappasswd -h {SSHA} -s 'correct horse'` (OpenLDAP 2.5), the pw-sha2
    // module for {SSHA256}/{SSHA512}, OpenLDAP's argon2 module
    // (`slappasswd -o module-load=argon2 -h {ARGON2}`) and the reference
    // `argon2` CLI (`echo -n 'correct horse' | argon2 somesaltvalue16b -id
    // -t 2 -m 16 -p 1 -e`).
    const PASSWORD: &str = "correct horse";
    const SSHA: &str = "{SSHA}XivE4Y2U8ZX2fq9ckn7E68CRszsSesTF";
    const SSHA_WONDERLAND: &str = "{SSHA}A2Vkid2EbgoHVEuRQiN8CZ6+FETeH9Cw";
    const SSHA_ELEVE: &str = "{SSHA}uuR6ZYPP6NCU30RlbDSjeRJ29r05krOm";
    const SSHA256: &str = "{SSHA256}HHlodI1Ed+WzI/FeEqmCFkCK+x5/K2p+dBpUGsEDD9cfStrN+M+Glw==";
    const SSHA512: &str = "{SSHA512}EbVhDLJzfiAg3Z3lZbLYOQ8V7bAvQLOi387DksBHKkMMHokgnnXrCDzk2suKHro5uhqkZsPAuOnFEJeA6Vkr87FZreVFm4mv";
    const SHA: &str = "{SHA}L55TUjtiq8FBorTWAZ0jy6g129A=";
    const ARGON2_OPENLDAP: &str =
        "{ARGON2}$argon2i$v=19$m=4096,t=3,p=1$aoYVY+sOrkDLZRAJr9YkXw$x7Ga0eTDlau+aDJjn3+8M30h190EKUd76WcYL9GmaLA";
    const ARGON2_REFERENCE_CLI: &str =
        "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHR2YWx1ZTE2Yg$2SsXz1ZbKX5WNAb/hurTdZCSgX74KpI0z4QR23eGRBg";
    const CRYPT: &str = "{CRYPT}kXVrmhOWady.sij368ykNdbE";

    fn cheap() -> Argon2Params {
        Argon2Params {
            memory_kib: 256,
            time_cost: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn known_answers_from_openldap_and_the_reference_cli() {
        for stored in [
            SSHA,
            SSHA256,
            SSHA512,
            SHA,
            ARGON2_OPENLDAP,
            ARGON2_REFERENCE_CLI,
        ] {
            let hash = PasswordHash::parse(stored).unwrap();
            assert!(hash.verify(PASSWORD.as_bytes()), "{stored}");
            assert!(!hash.verify(b"correct horsf"), "{stored}");
            assert!(!hash.verify(b""), "{stored}");
        }
        let wonderland = PasswordHash::parse(SSHA_WONDERLAND).unwrap();
        assert!(wonderland.verify(b"wonderland"));
        assert!(!wonderland.verify(PASSWORD.as_bytes()));
        let eleve = PasswordHash::parse(SSHA_ELEVE).unwrap();
        assert!(eleve.verify("élève".as_bytes()));
    }

    #[test]
    fn scheme_prefix_is_case_insensitive() {
        let lower = SSHA.replace("{SSHA}", "{ssha}");
        assert!(PasswordHash::parse(&lower)
            .unwrap()
            .verify(PASSWORD.as_bytes()));
        assert_eq!(PasswordHash::parse(&lower).unwrap().scheme(), "{SSHA}");
        assert_eq!(PasswordHash::parse(SHA).unwrap().scheme(), "{SHA}");
    }

    #[test]
    fn unsupported_schemes_are_refused_by_name() {
        assert_eq!(
            PasswordHash::parse(CRYPT),
            Err(PasswordError::UnsupportedScheme("{CRYPT}".to_owned()))
        );
        assert_eq!(
            PasswordHash::parse("{MD5}abc"),
            Err(PasswordError::UnsupportedScheme("{MD5}".to_owned()))
        );
        // A clear-text userPassword is never compared.
        assert_eq!(
            PasswordHash::parse("correct horse"),
            Err(PasswordError::UnsupportedScheme("(none)".to_owned()))
        );
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        for stored in [
            "{SSHA}!!!",
            "{SSHA}AAAA",
            "{SSHA}XivE4Y2U8ZX2fq9ckn7E68CRszs=",
            "{SHA}XivE4Y2U8ZX2fq9ckn7E68CRszsSesTF",
            "{ARGON2}nonsense",
            "{ARGON2}$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHR2YWx1ZTE2Yg$2SsXz1ZbKX5WNAb/hurTdZCSgX74KpI0z4QR23eGRBg",
            "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHR2YWx1ZTE2Yg",
            "{ARGON2}$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
            "{SSHA",
        ] {
            assert!(
                matches!(
                    PasswordHash::parse(stored),
                    Err(PasswordError::Malformed { .. } | PasswordError::UnsupportedScheme(_))
                ),
                "{stored}"
            );
        }
    }

    #[test]
    fn created_argon2_values_verify_and_name_argon2id() {
        let stored = hash_argon2(PASSWORD.as_bytes(), cheap()).unwrap();
        assert!(stored.starts_with("{ARGON2}$argon2id$v=19$m=256,t=1,p=1$"));
        let hash = PasswordHash::parse(&stored).unwrap();
        assert!(hash.verify(PASSWORD.as_bytes()));
        assert!(!hash.verify(b"wrong"));
        // A new random salt every time.
        assert_ne!(stored, hash_argon2(PASSWORD.as_bytes(), cheap()).unwrap());
        assert_eq!(format!("{hash:?}"), "PasswordHash(\"{ARGON2}\")");
    }

    #[test]
    fn dummies_have_the_same_scheme_and_cost() {
        for stored in [SSHA, SSHA512, ARGON2_OPENLDAP] {
            let hash = PasswordHash::parse(stored).unwrap();
            let dummy = hash.dummy_like().unwrap();
            assert_eq!(dummy.scheme(), hash.scheme());
            assert!(!dummy.verify(PASSWORD.as_bytes()));
            if let (HashKind::Argon2(a), HashKind::Argon2(b)) = (&hash.kind, &dummy.kind) {
                let params = |s: &str| s.split('$').nth(3).map(str::to_owned);
                assert_eq!(params(a), params(b));
            }
        }
    }
}
