//! Content hashing. Evidence is addressed by SHA-256; 国密 deployments also keep SM3. Both are computed in
//! one streaming pass so that memory stays flat whatever the file size.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::fmt;
use std::str::FromStr;

/// The hash algorithms Custody computes over evidence bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Sha256,
    Sm3,
}

impl HashAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sm3 => "sm3",
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a hex digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{algorithm}: expected 64 hex digits, got {got:?}")]
pub struct ParseDigestError {
    pub algorithm: HashAlgorithm,
    pub got: String,
}

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident, $alg:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(
            feature = "openapi",
            derive(utoipa::ToSchema),
            schema(value_type = String, pattern = "^[0-9a-f]{64}$")
        )]
        pub struct $name([u8; 32]);

        impl $name {
            pub const ALGORITHM: HashAlgorithm = $alg;

            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Parses 64 hex digits, either case.
            pub fn parse_hex(s: &str) -> Result<Self, ParseDigestError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseDigestError {
                    algorithm: $alg,
                    got: s.chars().take(80).collect(),
                })?;
                Ok(Self(out))
            }

            /// Lowercase hex, the canonical form everywhere in Custody.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Builds from a stored byte slice, which must be 32 bytes long.
            pub fn from_slice(b: &[u8]) -> Result<Self, ParseDigestError> {
                <[u8; 32]>::try_from(b).map(Self).map_err(|_| ParseDigestError {
                    algorithm: $alg,
                    got: format!("{} bytes", b.len()),
                })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = ParseDigestError;
            fn from_str(s: &str) -> Result<Self, ParseDigestError> {
                Self::parse_hex(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseDigestError;
            fn try_from(s: String) -> Result<Self, ParseDigestError> {
                Self::parse_hex(&s)
            }
        }

        impl From<$name> for String {
            fn from(d: $name) -> String {
                d.to_hex()
            }
        }
    };
}

digest_type!(
    /// A SHA-256 digest: the content address of evidence.
    Sha256,
    HashAlgorithm::Sha256
);
digest_type!(
    /// An SM3 digest (GB/T 32905-2016), kept beside SHA-256 for 国密 deployments.
    Sm3,
    HashAlgorithm::Sm3
);

/// The digests of one byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub sha256: Sha256,
    pub sm3: Option<Sm3>,
    pub size: u64,
}

/// Streaming SHA-256 and, when asked for, SM3 over the same bytes.
///
/// Feed it in chunks with [`ContentHasher::update`]; memory use does not depend on the input size. It is
/// CPU work: callers in async code run it on a blocking thread.
#[derive(Clone)]
pub struct ContentHasher {
    sha256: sha2::Sha256,
    sm3: Option<sm3::Sm3>,
    size: u64,
}

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentHasher")
            .field("with_sm3", &self.sm3.is_some())
            .field("size", &self.size)
            .finish()
    }
}

impl ContentHasher {
    pub fn new(with_sm3: bool) -> Self {
        Self {
            sha256: sha2::Sha256::new(),
            sm3: with_sm3.then(sm3::Sm3::new),
            size: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(sm3) = &mut self.sm3 {
            sm3.update(data);
        }
        self.size += data.len() as u64;
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: Sha256(self.sha256.finalize().into()),
            sm3: self.sm3.map(|s| Sm3(s.finalize().into())),
            size: self.size,
        }
    }

    /// Hashes a byte slice in one call.
    pub fn digest(data: &[u8], with_sm3: bool) -> Digests {
        let mut h = Self::new(with_sm3);
        h.update(data);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // FIPS 180-2 appendix B test vectors.
    const SHA256_VECTORS: &[(&[u8], &str)] = &[
        (
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ];

    // GB/T 32905-2016 appendix A examples 1 and 2.
    const SM3_VECTORS: &[(&[u8], &str)] = &[
        (
            b"abc",
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",
        ),
        (
            b"abcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcd",
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732",
        ),
    ];

    #[test]
    fn sha256_matches_the_fips_180_2_vectors() {
        for (input, want) in SHA256_VECTORS {
            assert_eq!(ContentHasher::digest(input, false).sha256.to_hex(), *want);
        }
    }

    #[test]
    fn sha256_of_one_million_a_matches_the_fips_vector_when_fed_in_odd_chunks() {
        let mut h = ContentHasher::new(false);
        let chunk = [b'a'; 7919];
        let mut left = 1_000_000usize;
        while left > 0 {
            let n = left.min(chunk.len());
            h.update(&chunk[..n]);
            left -= n;
        }
        let d = h.finish();
        assert_eq!(d.size, 1_000_000);
        assert_eq!(
            d.sha256.to_hex(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        assert!(d.sm3.is_none());
    }

    #[test]
    fn sm3_matches_the_gb_t_32905_vectors() {
        for (input, want) in SM3_VECTORS {
            let d = ContentHasher::digest(input, true);
            assert_eq!(d.sm3.expect("sm3 requested").to_hex(), *want);
        }
    }

    #[test]
    fn chunked_and_one_shot_hashing_agree() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut h = ContentHasher::new(true);
        for c in data.chunks(4096 + 3) {
            h.update(c);
        }
        assert_eq!(h.finish(), ContentHasher::digest(&data, true));
    }

    #[test]
    fn hex_digests_parse_in_either_case_and_print_lowercase() {
        let up = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        let d = Sha256::parse_hex(up).unwrap();
        assert_eq!(d.to_hex(), up.to_lowercase());
    }

    #[test]
    fn a_short_or_non_hex_digest_is_refused_naming_the_algorithm() {
        let e = Sha256::parse_hex("abc").unwrap_err();
        assert_eq!(e.to_string(), "sha256: expected 64 hex digits, got \"abc\"");
        let e = Sm3::parse_hex(&"zz".repeat(32)).unwrap_err();
        assert!(e.to_string().starts_with("sm3:"), "{e}");
    }
}
