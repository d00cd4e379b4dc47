//! The certificate credential read locally: its DER bytes from the PEM text, and its `notAfter`,
//! which is when Entra stops accepting client assertions signed for it.
//!
//! The walk to `notAfter` reads tags and lengths only and never decodes the names or extensions
//! it steps over. A general ASN.1 decoder (`simple_asn1`, already in the tree through
//! jsonwebtoken) decodes every string of the certificate strictly: it refuses a whole certificate
//! for one name with a character PrintableString does not allow (`@`, `*`, `_`), which some
//! issuers write; the X.509 parser crates would be new dependencies for one date.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, Utc};

use super::Error;

/// DER tags on the way to the validity (X.690 §8.1.2).
const SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version`, absent from version 1 certificates.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The DER bytes of the first certificate in a PEM text.
pub(super) fn certificate_der(certificate_pem: &str) -> Result<Vec<u8>, Error> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let not_pem = || Error::Certificate {
        reason: "the certificate has no -----BEGIN CERTIFICATE----- block".to_owned(),
    };
    let (_, rest) = certificate_pem.split_once(BEGIN).ok_or_else(not_pem)?;
    let (body, _) = rest.split_once(END).ok_or_else(not_pem)?;
    let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(base64).map_err(|error| Error::Certificate {
        reason: format!("the certificate block is not base64 ({error})"),
    })
}

/// When the first certificate of a PEM text stops being valid (its `notAfter`).
pub fn certificate_not_after(certificate_pem: &str) -> Result<DateTime<Utc>, Error> {
    not_after(&certificate_der(certificate_pem)?).ok_or_else(|| Error::Certificate {
        reason: "its validity (notAfter) cannot be read: the PEM block is not an X.509 certificate"
            .to_owned(),
    })
}

/// `Certificate.tbsCertificate.validity.notAfter` (RFC 5280 §4.1).
fn not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut fields, _) = element(certificate)? else {
        return None;
    };
    let (tag, _, after_version) = element(fields)?;
    if tag == VERSION {
        fields = after_version;
    }
    // serialNumber, signature, issuer, then the validity.
    for _ in 0..3 {
        fields = element(fields)?.2;
    }
    let (SEQUENCE, validity, _) = element(fields)? else {
        return None;
    };
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    let time = std::str::from_utf8(time).ok()?;
    // RFC 5280 §4.1.2.5: UTCTime YYMMDDHHMMSSZ (YY from 50 is 19YY) until 2049, then
    // GeneralizedTime YYYYMMDDHHMMSSZ; both in UTC, without fractions.
    let digits = match tag {
        UTC_TIME if time.len() == 13 => {
            let century = if time.get(..2)? >= "50" { "19" } else { "20" };
            format!("{century}{}", time.strip_suffix('Z')?)
        }
        GENERALIZED_TIME if time.len() == 15 => time.strip_suffix('Z')?.to_owned(),
        _ => return None,
    };
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range)?.parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(i32::try_from(number(0..4)?).ok()?, number(4..6)?, number(6..8)?)?;
    Some(
        date.and_hms_opt(number(8..10)?, number(10..12)?, number(12..14)?)?
            .and_utc(),
    )
}

/// The first DER element of `input`: its tag, its contents and the bytes after it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags do not occur on the way to the validity.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // DER has no indefinite length (0x80); four length bytes are far beyond any certificate.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, after) = rest.split_at(length);
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph emulator's test certificate, made with `-days 36500`: its `notAfter` is a
    /// GeneralizedTime, as every date from 2050 on is.
    const EMULATOR_CERTIFICATE: &str = include_str!("../../../graph-emulator/tests/fixtures/test-cert.pem");

    #[test]
    fn not_after_of_a_certificate_valid_past_2049() {
        let not_after = certificate_not_after(EMULATOR_CERTIFICATE).expect("a certificate");
        assert_eq!(not_after.to_rfc3339(), "2126-10-29T08:28:31+00:00");
    }

    #[test]
    fn not_after_of_a_certificate_from_the_openssl_cli() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "45"])
            .args([
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-subj",
                "/CN=entra-sync test",
            ])
            .current_dir(dir.path())
            .output()
            .is_ok_and(|output| output.status.success());
        if !made {
            eprintln!("skipped: the openssl CLI is not available to make a test certificate");
            return;
        }
        let pem = std::fs::read_to_string(dir.path().join("cert.pem")).expect("openssl wrote it");
        let not_after = certificate_not_after(&pem).expect("a certificate");
        let days = (not_after - crate::clock::now()).num_hours() as f64 / 24.0;
        assert!((44.9..=45.0).contains(&days), "{not_after}: {days} days");
    }

    #[test]
    fn a_block_that_is_not_a_certificate_says_so() {
        let not_a_certificate = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        let error = certificate_not_after(not_a_certificate).expect_err("no validity");
        assert!(error.to_string().contains("notAfter"), "{error}");
        let error = certificate_der("MIIB...").expect_err("not PEM");
        assert!(
            error.to_string().contains("no -----BEGIN CERTIFICATE----- block"),
            "{error}"
        );
    }
}
