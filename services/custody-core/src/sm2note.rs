//! SM2 keys for C2SP signed notes (<https://c2sp.org/signed-note>): generating them, reading them from
//! and writing them to the same text forms `signed_note` uses for Ed25519, and signing and verifying note
//! text with them, so a ledger checkpoint can carry an SM2 (GB/T 32918) signature line next to its
//! Ed25519 one. Pure: no IO, no clock; randomness only where a key is generated, from the caller's RNG.
//!
//! Key texts look like signed_note's own:
//!
//! ```text
//! PRIVATE+KEY+<name>+<8 hex key id>+base64(SM2_KEY_TYPE || 32-byte secret scalar)
//! <name>+<8 hex key id>+base64(SM2_KEY_TYPE || 65-byte uncompressed SEC1 public key)
//! ```
//!
//! and the key id is the one C2SP recommends, computed exactly as `signed_note` does for Ed25519:
//! `SHA-256(name || 0x0A || SM2_KEY_TYPE || public key)[:4]`, that is
//! `signed_note::key_id(name, SM2_KEY_TYPE || public key)`. A signature line carries the 64-byte `r || s`
//! SM2 signature over the note text.

use base64::prelude::*;
use signed_note::{is_key_name_valid, key_id};
use sm2::dsa::signature::{Signer as _, Verifier as _};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm2::elliptic_curve::rand_core::CryptoRngCore;
use sm2::elliptic_curve::sec1::ToEncodedPoint;
use sm2::{NonZeroScalar, Scalar, Sm2};

/// The signature type byte C2SP signed-note reserves for "signature types without an identifier byte
/// assigned by this specification", which it RECOMMENDS be followed by a longer identifier that is
/// unlikely to collide.
///
/// The spec assigns `0x01` (Ed25519), `0x02` (ECDSA on the NIST curves), `0x04` (timestamped Ed25519
/// cosignatures) and `0x05` (RFC 6962 tree head signatures), reserves `0x03` and `0xfa`..`0xfe` for its
/// own future use, and has no SM2 type. So an SM2 key takes `0xff`, followed by [`SM2_WITH_SM3_OID_DER`].
pub const SIGNATURE_TYPE_OTHER: u8 = 0xff;

/// The DER encoding (tag, length, value) of OID 1.2.156.10197.1.501, "SM2-with-SM3" (GM/T 0006), the
/// registered name of exactly this signature scheme. A registered OID is as collision-proof an identifier
/// as there is, and being DER it carries its own length, so the public key after it needs no separator.
pub const SM2_WITH_SM3_OID_DER: [u8; 10] =
    [0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75];

/// What stands before the key in an SM2 key's base64 data, and before the public key in its key id hash:
/// [`SIGNATURE_TYPE_OTHER`] then [`SM2_WITH_SM3_OID_DER`]. This whole prefix plays the role the single
/// `0x01` byte plays for Ed25519.
pub const SM2_KEY_TYPE: [u8; 1 + SM2_WITH_SM3_OID_DER.len()] = {
    let mut prefix = [SIGNATURE_TYPE_OTHER; 1 + SM2_WITH_SM3_OID_DER.len()];
    let mut i = 0;
    while i < SM2_WITH_SM3_OID_DER.len() {
        prefix[1 + i] = SM2_WITH_SM3_OID_DER[i];
        i += 1;
    }
    prefix
};

/// The distinguishing identifier every SM2 note signature uses: the default user ID of GB/T 32918.2 /
/// GM/T 0009 (the ASCII digits "1234567812345678", 128 bits), which OpenSSL, GmSSL and Bouncy Castle also
/// use when none is given. It goes into the `Z_A` hash that is signed along with the note text, so a
/// signature only verifies under the same identifier; fixing it here keeps it out of the key text.
pub const SM2_DISTINGUISHING_ID: &str = "1234567812345678";

/// Length of an SM2 secret scalar and of each half of a signature.
const SCALAR_LEN: usize = 32;
/// Length of an uncompressed SEC1 point on the SM2 curve: `0x04 || x || y`.
const PUBLIC_KEY_LEN: usize = 65;

/// Why a text is not a usable SM2 signed-note key. Messages never repeat key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Sm2KeyError {
    #[error("key text is not {expected}")]
    Shape { expected: &'static str },
    #[error("key name {0:?} is empty or contains a space or a plus sign")]
    Name(String),
    #[error("key id {0:?} is not 8 hex digits")]
    KeyIdFormat(String),
    #[error("key data is not standard base64")]
    Base64,
    #[error(
        "key is not an SM2 key: its data starts with {found}, expected ff followed by the DER of \
         OID 1.2.156.10197.1.501 (ff06082a811ccf55018375)"
    )]
    NotSm2 { found: String },
    #[error(
        "key id {in_text:08x} does not match {computed:08x}, computed from the name and the key"
    )]
    KeyIdMismatch { in_text: u32, computed: u32 },
    #[error("secret key is not a 32-byte big-endian scalar in 1..n-2 of the SM2 curve")]
    Scalar,
    #[error("public key is not a 65-byte uncompressed SEC1 point on the SM2 curve")]
    Point,
}

/// The parts every key text has once its shape is checked: name, id as written, decoded key data.
struct KeyText<'a> {
    name: &'a str,
    id: u32,
    data: Vec<u8>,
}

/// Splits `<name>+<8 hex id>+<base64>` (the base64 may itself contain `+`, names may not).
fn parse_key_text(text: &str) -> Result<KeyText<'_>, Sm2KeyError> {
    const EXPECTED: &str = "<name>+<8 hex key id>+<base64 key>";
    let (name, rest) = text
        .split_once('+')
        .ok_or(Sm2KeyError::Shape { expected: EXPECTED })?;
    let (id16, key64) = rest
        .split_once('+')
        .ok_or(Sm2KeyError::Shape { expected: EXPECTED })?;
    if !is_key_name_valid(name) {
        return Err(Sm2KeyError::Name(name.to_string()));
    }
    if id16.len() != 8 || !id16.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Sm2KeyError::KeyIdFormat(id16.to_string()));
    }
    let id =
        u32::from_str_radix(id16, 16).map_err(|_| Sm2KeyError::KeyIdFormat(id16.to_string()))?;
    let data = BASE64_STANDARD
        .decode(key64)
        .map_err(|_| Sm2KeyError::Base64)?;
    Ok(KeyText { name, id, data })
}

/// The key after the SM2 type prefix, or which prefix was there instead.
fn strip_sm2_type(data: &[u8]) -> Result<&[u8], Sm2KeyError> {
    data.strip_prefix(SM2_KEY_TYPE.as_slice())
        .ok_or_else(|| Sm2KeyError::NotSm2 {
            found: if data.is_empty() {
                "nothing".to_string()
            } else {
                hex::encode(&data[..data.len().min(SM2_KEY_TYPE.len())])
            },
        })
}

/// The key data of a verifier key: type prefix and uncompressed SEC1 point. Also what the key id hashes.
fn public_key_data(key: &impl ToEncodedPoint<Sm2>) -> Vec<u8> {
    let point = key.to_encoded_point(false);
    [SM2_KEY_TYPE.as_slice(), point.as_bytes()].concat()
}

/// GB/T 32918 needs `1 + d` invertible, so `d = n - 1` is not a valid private key even though it is a
/// non-zero scalar; the sm2 crate would only fail on it at signing time.
fn is_valid_secret(d: &NonZeroScalar) -> bool {
    !bool::from((**d + Scalar::ONE).is_zero())
}

/// Makes a new SM2 signed-note key pair for a key named `name`: (signing key text, verifier key text), in
/// the same shapes as [`signed_note::generate_key`] makes for Ed25519. The signing key text is secret.
///
/// `name` should pass [`signed_note::is_key_name_valid`]; as with `generate_key`, a key made with a name
/// that does not is refused when its text is read back.
pub fn generate_sm2_key<R: CryptoRngCore + ?Sized>(rng: &mut R, name: &str) -> (String, String) {
    // Every non-zero scalar but n - 1 is a valid key; drawing n - 1 has probability about 2^-256.
    // `&mut R` is a CryptoRngCore too, and sized even where `R` is not.
    let mut rng = rng;
    let secret = loop {
        let d = NonZeroScalar::random(&mut rng);
        if is_valid_secret(&d) {
            break d;
        }
    };
    let public = public_key_data(&sm2::PublicKey::from_secret_scalar(&secret));
    let id = key_id(name, &public);
    let private = [SM2_KEY_TYPE.as_slice(), &secret.to_bytes()[..]].concat();
    (
        format!(
            "PRIVATE+KEY+{name}+{id:08x}+{}",
            BASE64_STANDARD.encode(private)
        ),
        format!("{name}+{id:08x}+{}", BASE64_STANDARD.encode(public)),
    )
}

/// Reports whether a key text, signing (`PRIVATE+KEY+...`) or verifier, holds an SM2 key, judged by the
/// type prefix of its key data. Says nothing about whether the rest of the key is valid: it is for
/// choosing between [`Sm2Signer`] / [`Sm2Verifier`] and `signed_note`'s Ed25519 ones, whose constructors
/// then check everything.
pub fn is_sm2_key(text: &str) -> bool {
    let text = text.strip_prefix("PRIVATE+KEY+").unwrap_or(text);
    parse_key_text(text).is_ok_and(|k| k.data.starts_with(&SM2_KEY_TYPE))
}

/// Signs note text with an SM2 key, as a [`signed_note::Signer`]. Signatures are deterministic (the sm2
/// crate derives the nonce from the key and message as in RFC 6979, with HMAC-SM3), 64 bytes `r || s`,
/// made under [`SM2_DISTINGUISHING_ID`].
#[derive(Clone)]
pub struct Sm2Signer {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for Sm2Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sm2Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl Sm2Signer {
    /// Reads a signing key text `PRIVATE+KEY+<name>+<id>+<base64>` as made by [`generate_sm2_key`]. The
    /// key id must be the one the public key derived from the secret gives.
    pub fn new(signing_key_text: &str) -> Result<Self, Sm2KeyError> {
        let rest = signing_key_text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(Sm2KeyError::Shape {
                expected: "PRIVATE+KEY+<name>+<8 hex key id>+<base64 key>",
            })?;
        let KeyText { name, id, data } = parse_key_text(rest)?;
        let scalar = strip_sm2_type(&data)?;
        if scalar.len() != SCALAR_LEN {
            return Err(Sm2KeyError::Scalar);
        }
        let secret = NonZeroScalar::try_from(scalar).map_err(|_| Sm2KeyError::Scalar)?;
        if !is_valid_secret(&secret) {
            return Err(Sm2KeyError::Scalar);
        }
        let key = SigningKey::from_nonzero_scalar(SM2_DISTINGUISHING_ID, secret)
            .map_err(|_| Sm2KeyError::Scalar)?;
        let computed = key_id(name, &public_key_data(key.verifying_key()));
        if computed != id {
            return Err(Sm2KeyError::KeyIdMismatch {
                in_text: id,
                computed,
            });
        }
        Ok(Self {
            name: name.to_string(),
            id,
            key,
        })
    }

    /// The verifier key text for this signing key.
    pub fn verifier_key(&self) -> String {
        let data = public_key_data(self.key.verifying_key());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(data)
        )
    }
}

impl signed_note::Signer for Sm2Signer {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, sm2::dsa::signature::Error> {
        let sig: Signature = self.key.try_sign(msg)?;
        Ok(sig.to_bytes().to_vec())
    }
}

/// Checks SM2 signatures on note text, as a [`signed_note::Verifier`], under [`SM2_DISTINGUISHING_ID`].
#[derive(Debug, Clone)]
pub struct Sm2Verifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl Sm2Verifier {
    /// Reads a verifier key text `<name>+<id>+<base64>` as made by [`generate_sm2_key`]. The public key
    /// must be an uncompressed SEC1 point, so that one key has one text and one key id.
    pub fn new(verifier_key_text: &str) -> Result<Self, Sm2KeyError> {
        let KeyText { name, id, data } = parse_key_text(verifier_key_text)?;
        let point = strip_sm2_type(&data)?;
        if point.len() != PUBLIC_KEY_LEN || point.first() != Some(&0x04) {
            return Err(Sm2KeyError::Point);
        }
        let computed = key_id(name, &data);
        if computed != id {
            return Err(Sm2KeyError::KeyIdMismatch {
                in_text: id,
                computed,
            });
        }
        let key = VerifyingKey::from_sec1_bytes(SM2_DISTINGUISHING_ID, point)
            .map_err(|_| Sm2KeyError::Point)?;
        Ok(Self {
            name: name.to_string(),
            id,
            key,
        })
    }
}

impl signed_note::Verifier for Sm2Verifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    /// False for anything but a valid 64-byte `r || s` signature of `msg` by this key.
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match Signature::from_slice(sig) {
            Ok(sig) => self.key.verify(msg, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signed_note::{
        Note, NoteError, Signer as _, StandardSigner, StandardVerifier, Verifier as _,
        VerifierError, VerifierList,
    };

    const NAME: &str = "custody.example/ledger";
    const TEXT: &str = "custody.example/ledger\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n";

    fn sm2_keys(name: &str) -> (String, String) {
        generate_sm2_key(&mut rand_core_06::OsRng, name)
    }

    fn verifier_text(name: &str, data: &[u8]) -> String {
        format!(
            "{name}+{:08x}+{}",
            key_id(name, data),
            BASE64_STANDARD.encode(data)
        )
    }

    fn signing_text(name: &str, id: u32, data: &[u8]) -> String {
        format!(
            "PRIVATE+KEY+{name}+{id:08x}+{}",
            BASE64_STANDARD.encode(data)
        )
    }

    #[test]
    fn generated_keys_sign_and_verify_a_message() {
        let (skey, vkey) = sm2_keys(NAME);
        let signer = Sm2Signer::new(&skey).unwrap();
        let verifier = Sm2Verifier::new(&vkey).unwrap();
        assert_eq!((signer.name(), verifier.name()), (NAME, NAME));
        assert_eq!(signer.key_id(), verifier.key_id());
        assert_eq!(signer.verifier_key(), vkey);

        let sig = signer.sign(TEXT.as_bytes()).unwrap();
        assert_eq!(sig.len(), 64);
        assert!(verifier.verify(TEXT.as_bytes(), &sig));
    }

    #[test]
    fn the_key_id_in_the_text_is_signed_notes_key_id_of_the_type_and_public_key() {
        let (skey, vkey) = sm2_keys(NAME);
        let (name, rest) = vkey.split_once('+').unwrap();
        let (id16, key64) = rest.split_once('+').unwrap();
        let data = BASE64_STANDARD.decode(key64).unwrap();
        assert_eq!(name, NAME);
        assert_eq!(data.len(), SM2_KEY_TYPE.len() + 65);
        assert_eq!(&data[..SM2_KEY_TYPE.len()], SM2_KEY_TYPE.as_slice());
        assert_eq!(data[SM2_KEY_TYPE.len()], 0x04);
        assert_eq!(id16, format!("{:08x}", key_id(NAME, &data)));
        assert!(skey.starts_with(&format!("PRIVATE+KEY+{NAME}+{id16}+")));
        let private = BASE64_STANDARD
            .decode(&skey[format!("PRIVATE+KEY+{NAME}+{id16}+").len()..])
            .unwrap();
        assert_eq!(private.len(), SM2_KEY_TYPE.len() + 32);
        assert_eq!(&private[..SM2_KEY_TYPE.len()], SM2_KEY_TYPE.as_slice());
    }

    #[test]
    fn the_key_type_is_ff_then_the_der_of_the_sm2_with_sm3_oid() {
        // From `openssl asn1parse -genstr OID:1.2.156.10197.1.501`, which prints "SM2-with-SM3".
        assert_eq!(hex::encode(SM2_KEY_TYPE), "ff06082a811ccf55018375");
        assert_eq!(SM2_KEY_TYPE[1..], SM2_WITH_SM3_OID_DER);
    }

    #[test]
    fn a_note_signed_with_ed25519_and_sm2_verifies_with_both_and_carries_both_lines() {
        let (ed_skey, ed_vkey) = signed_note::generate_key(&mut rand_core_06::OsRng, NAME);
        let (sm_skey, sm_vkey) = sm2_keys(NAME);
        let ed = StandardSigner::new(&ed_skey).unwrap();
        let sm = Sm2Signer::new(&sm_skey).unwrap();

        let mut note = Note::new(TEXT.as_bytes(), &[]).unwrap();
        note.add_sigs(&[&ed, &sm]).unwrap();
        let signed = String::from_utf8(note.to_bytes()).unwrap();
        let lines: Vec<&str> = signed
            .lines()
            .filter(|l| l.starts_with('\u{2014}'))
            .collect();
        assert_eq!(lines.len(), 2, "{signed}");
        for (line, id, len) in [(lines[0], ed.key_id(), 64), (lines[1], sm.key_id(), 64)] {
            let sig = signed_note::Signature::from_bytes(line.as_bytes()).unwrap();
            assert_eq!(
                (sig.name(), sig.id(), sig.signature().len()),
                (NAME, id, len)
            );
        }

        let parsed = Note::from_bytes(signed.as_bytes()).unwrap();
        let both = VerifierList::new(vec![
            Box::new(StandardVerifier::new(&ed_vkey).unwrap()),
            Box::new(Sm2Verifier::new(&sm_vkey).unwrap()),
        ]);
        let (verified, unverified) = parsed.verify(&both).unwrap();
        let ids: Vec<u32> = verified.iter().map(|s| s.id()).collect();
        assert_eq!(ids, vec![ed.key_id(), sm.key_id()]);
        assert!(unverified.is_empty());

        // A verifier that knows only the SM2 key verifies its line and leaves the Ed25519 one unverified.
        let sm_only = VerifierList::new(vec![Box::new(Sm2Verifier::new(&sm_vkey).unwrap())]);
        let (verified, unverified) = parsed.verify(&sm_only).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].id(), sm.key_id());
        assert_eq!(unverified.len(), 1);
        assert_eq!(unverified[0].id(), ed.key_id());
    }

    #[test]
    fn another_sm2_key_of_the_same_name_does_not_verify() {
        let (skey, _) = sm2_keys(NAME);
        let (_, other_vkey) = sm2_keys(NAME);
        let signer = Sm2Signer::new(&skey).unwrap();
        let other = Sm2Verifier::new(&other_vkey).unwrap();
        assert_ne!(signer.key_id(), other.key_id());

        let sig = signer.sign(TEXT.as_bytes()).unwrap();
        assert!(!other.verify(TEXT.as_bytes(), &sig));

        let mut note = Note::new(TEXT.as_bytes(), &[]).unwrap();
        note.add_sigs(&[&signer]).unwrap();
        let err = note
            .verify(&VerifierList::new(vec![Box::new(other)]))
            .unwrap_err();
        assert!(matches!(err, NoteError::UnverifiedNote), "{err}");
    }

    #[test]
    fn a_tampered_message_does_not_verify() {
        let (skey, vkey) = sm2_keys(NAME);
        let signer = Sm2Signer::new(&skey).unwrap();
        let mut note = Note::new(TEXT.as_bytes(), &[]).unwrap();
        note.add_sigs(&[&signer]).unwrap();
        let tampered = String::from_utf8(note.to_bytes())
            .unwrap()
            .replacen("\n8\n", "\n9\n", 1);
        let err = Note::from_bytes(tampered.as_bytes())
            .unwrap()
            .verify(&VerifierList::new(vec![Box::new(
                Sm2Verifier::new(&vkey).unwrap(),
            )]))
            .unwrap_err();
        assert!(matches!(err, NoteError::InvalidSignature { .. }), "{err}");
    }

    #[test]
    fn a_malformed_signature_is_refused_without_panicking() {
        let (skey, vkey) = sm2_keys(NAME);
        let sig = Sm2Signer::new(&skey).unwrap().sign(b"m\n").unwrap();
        let verifier = Sm2Verifier::new(&vkey).unwrap();
        let mut flipped = sig.clone();
        flipped[40] ^= 1;
        for bad in [
            vec![],
            sig[..63].to_vec(),
            [sig.as_slice(), &[0]].concat(),
            vec![0; 64],
            vec![0xff; 64],
            [[0u8; 32], [1u8; 32]].concat(),
            flipped,
        ] {
            assert!(!verifier.verify(b"m\n", &bad), "{}", hex::encode(&bad));
        }
        assert!(verifier.verify(b"m\n", &sig));
    }

    #[test]
    fn ed25519_and_sm2_key_texts_are_told_apart() {
        let (ed_skey, ed_vkey) = signed_note::generate_key(&mut rand_core_06::OsRng, NAME);
        let (sm_skey, sm_vkey) = sm2_keys(NAME);
        assert!(is_sm2_key(&sm_skey));
        assert!(is_sm2_key(&sm_vkey));
        assert!(!is_sm2_key(&ed_skey));
        assert!(!is_sm2_key(&ed_vkey));
        assert!(!is_sm2_key(""));
        assert!(!is_sm2_key("not a key"));

        // Each side refuses the other's keys with its "wrong algorithm" error.
        assert!(matches!(
            StandardVerifier::new(&sm_vkey),
            Err(VerifierError::Alg)
        ));
        assert!(matches!(
            Sm2Verifier::new(&ed_vkey),
            Err(Sm2KeyError::NotSm2 { found }) if found.starts_with("01")
        ));
        assert!(matches!(
            Sm2Signer::new(&ed_skey),
            Err(Sm2KeyError::NotSm2 { .. })
        ));
    }

    #[test]
    fn malformed_key_texts_give_the_error_that_names_the_problem() {
        let (skey, vkey) = sm2_keys(NAME);
        let signer = Sm2Signer::new(&skey).unwrap();
        let (_, rest) = vkey.split_once('+').unwrap();
        let (id16, key64) = rest.split_once('+').unwrap();
        let data = BASE64_STANDARD.decode(key64).unwrap();
        let id = signer.key_id();

        let shape = |t: &str| matches!(Sm2Verifier::new(t), Err(Sm2KeyError::Shape { .. }));
        assert!(shape(""));
        assert!(shape("name-only"));
        assert!(shape("name+0123abcd"));
        assert!(matches!(
            Sm2Signer::new(&vkey),
            Err(Sm2KeyError::Shape { .. })
        ));
        assert!(matches!(
            Sm2Signer::new(&format!("PUBLIC+KEY+{NAME}+{id16}+{key64}")),
            Err(Sm2KeyError::Shape { .. })
        ));

        assert_eq!(
            Sm2Verifier::new(&format!("bad name+{id16}+{key64}")).unwrap_err(),
            Sm2KeyError::Name("bad name".into())
        );
        assert_eq!(
            Sm2Verifier::new(&format!("+{id16}+{key64}")).unwrap_err(),
            Sm2KeyError::Name(String::new())
        );
        for bad_id in ["1234567", "123456789", "+1234567", "xyzxyzxy"] {
            assert!(
                matches!(
                    Sm2Verifier::new(&format!("{NAME}+{bad_id}+{key64}")),
                    Err(Sm2KeyError::KeyIdFormat(_) | Sm2KeyError::Shape { .. })
                ),
                "{bad_id}"
            );
        }
        assert_eq!(
            Sm2Verifier::new(&format!("{NAME}+{id16}+not*base64")).unwrap_err(),
            Sm2KeyError::Base64
        );

        // Wrong type prefix: the Ed25519 byte, a bare 0xff, and 0xff with another identifier.
        let point = &data[SM2_KEY_TYPE.len()..];
        for prefix in [&[0x01][..], &[0xff][..], &[0xff, 0x06, 0x08, 0x2a][..]] {
            let t = verifier_text(NAME, &[prefix, point].concat());
            assert!(
                matches!(Sm2Verifier::new(&t), Err(Sm2KeyError::NotSm2 { .. })),
                "{t}"
            );
        }
        assert!(matches!(
            Sm2Verifier::new(&format!("{NAME}+{id16}+")),
            Err(Sm2KeyError::NotSm2 { found }) if found == "nothing"
        ));

        // The id must be the one the key gives, for verifier and signing keys alike.
        let wrong = id ^ 1;
        assert_eq!(
            Sm2Verifier::new(&format!("{NAME}+{wrong:08x}+{key64}")).unwrap_err(),
            Sm2KeyError::KeyIdMismatch {
                in_text: wrong,
                computed: id
            }
        );
        assert_eq!(
            Sm2Verifier::new(&format!("other.example+{id16}+{key64}")).unwrap_err(),
            Sm2KeyError::KeyIdMismatch {
                in_text: id,
                computed: key_id("other.example", &data)
            }
        );
        let private64 = &skey[format!("PRIVATE+KEY+{NAME}+{id16}+").len()..];
        assert_eq!(
            Sm2Signer::new(&format!("PRIVATE+KEY+{NAME}+{wrong:08x}+{private64}")).unwrap_err(),
            Sm2KeyError::KeyIdMismatch {
                in_text: wrong,
                computed: id
            }
        );

        // Points: compressed, wrong length, not on the curve.
        let mut compressed = vec![0x02 | (point[64] & 1)];
        compressed.extend_from_slice(&point[1..33]);
        let mut off_curve = point.to_vec();
        off_curve[64] ^= 1;
        for p in [compressed, point[..64].to_vec(), off_curve, vec![0x04; 65]] {
            let t = verifier_text(NAME, &[SM2_KEY_TYPE.as_slice(), &p].concat());
            assert_eq!(Sm2Verifier::new(&t).unwrap_err(), Sm2KeyError::Point, "{t}");
        }

        // Scalars: zero, n - 1 (1 + d is not invertible), n, too short, too long.
        let n_minus_1 = (-Scalar::ONE).to_bytes();
        let n = hex::decode("fffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54123")
            .unwrap();
        for s in [vec![0; 32], n_minus_1.to_vec(), n, vec![1; 31], vec![1; 33]] {
            let t = signing_text(NAME, id, &[SM2_KEY_TYPE.as_slice(), &s].concat());
            assert_eq!(
                Sm2Signer::new(&t).unwrap_err(),
                Sm2KeyError::Scalar,
                "{}",
                hex::encode(&s)
            );
        }
    }

    /// A key and signature made by OpenSSL 3.0, which implements SM2 independently of the sm2 crate:
    ///
    /// ```text
    /// openssl genpkey -algorithm SM2 -out k.pem
    /// printf '<TEXT>' > msg
    /// openssl pkeyutl -sign -inkey k.pem -rawin -digest sm3 -in msg -out sig \
    ///     -pkeyopt distid:1234567812345678
    /// openssl asn1parse -inform DER -in sig   # r and s
    /// ```
    ///
    /// The same signature fails `openssl pkeyutl -verify` with any other distid, so it also pins
    /// [`SM2_DISTINGUISHING_ID`].
    const OPENSSL_SECRET: &str = "b6e15967466459e52bee5ae20e0d54fbf9f65fad1658b462087af5193dc5d228";
    const OPENSSL_PUBLIC: &str = "041e3db6a475ec37d9615197db47ba0217933983a5486e237939ad5389c950299b\
                                  966e228ebe0976a1a7f3fce5f464eac189c19c432db4447c02f2ef877a2895f9";
    const OPENSSL_SIG: &str = "568b815df54482aac155cb5a6769471be92722be05fc2af9aab31e6b28c4f0de\
                               f3570da9071a4689c42f1070fc7d2bdee6fab7b079f9d5b4419299ca6e40ae4c";

    #[test]
    fn a_signature_made_by_openssl_with_the_default_distinguishing_id_verifies() {
        let public = hex::decode(OPENSSL_PUBLIC).unwrap();
        let data = [SM2_KEY_TYPE.as_slice(), &public].concat();
        let vkey = verifier_text(NAME, &data);
        let verifier = Sm2Verifier::new(&vkey).unwrap();
        let sig = hex::decode(OPENSSL_SIG).unwrap();
        assert!(verifier.verify(TEXT.as_bytes(), &sig));
        assert!(!verifier.verify(b"another text\n", &sig));

        // Our signer, given OpenSSL's secret, derives OpenSSL's public key and signs verifiably.
        let secret = hex::decode(OPENSSL_SECRET).unwrap();
        let skey = signing_text(
            NAME,
            key_id(NAME, &data),
            &[SM2_KEY_TYPE.as_slice(), &secret].concat(),
        );
        let signer = Sm2Signer::new(&skey).unwrap();
        assert_eq!(signer.verifier_key(), vkey);
        let ours = signer.sign(TEXT.as_bytes()).unwrap();
        assert!(verifier.verify(TEXT.as_bytes(), &ours));
        // Signing is deterministic (RFC 6979-style nonce), unlike OpenSSL's random nonce.
        assert_eq!(ours, signer.sign(TEXT.as_bytes()).unwrap());
    }

    #[test]
    fn signers_and_verifiers_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Sm2Signer>();
        shareable::<Sm2Verifier>();
    }
}
