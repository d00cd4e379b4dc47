//! The key that seals client secrets entered through the API, so the database never holds one in
//! clear (Architecture Invariant: secrets are stored encrypted when stored at all).
//!
//! The key comes from `ENTRA_SYNC_SECRET_KEY` (32 bytes, base64) or else from `secret.key` in the
//! data folder, created with mode 0600 on first start. Secrets are sealed with AES-256-GCM under a
//! random nonce, with the connection's name as associated data, so a sealed value copied onto
//! another connection's row does not open.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The environment variable that holds the key, base64.
pub const KEY_VARIABLE: &str = "ENTRA_SYNC_SECRET_KEY";

/// The key file's name in the data folder, used when the variable is not set.
pub const KEY_FILE: &str = "secret.key";

/// Marks the format of a sealed value, so a later format can be told apart.
const SEALED_PREFIX: &str = "v1:";

const KEY_LEN: usize = 32;

/// Why the key could not be had or a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("{KEY_VARIABLE} is not 32 bytes in base64: make one with `openssl rand -base64 32`")]
    BadVariable,
    #[error("the key file {path} is not 32 bytes in base64: restore it, or set {KEY_VARIABLE}")]
    BadFile { path: PathBuf },
    #[error("cannot read or create the key file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("the system's random source failed while sealing a secret")]
    Random,
    #[error(
        "the stored client secret of connection {connection:?} does not open with this key: set the {KEY_VARIABLE} or {KEY_FILE} it was sealed with, or enter the secret again"
    )]
    WrongKey { connection: String },
}

/// The key that seals and opens API-entered secrets. Its `Debug` shows nothing of the key.
pub struct SecretKey {
    key: RandomizedNonceKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// The key from `ENTRA_SYNC_SECRET_KEY`, or from the data folder's key file, made on first use.
    pub fn load(data_dir: &Path) -> Result<SecretKey, SecretKeyError> {
        if let Ok(text) = std::env::var(KEY_VARIABLE) {
            return SecretKey::from_base64(&text).ok_or(SecretKeyError::BadVariable);
        }
        let path = data_dir.join(KEY_FILE);
        let file_error = |source| SecretKeyError::File {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => SecretKey::from_base64(&text).ok_or(SecretKeyError::BadFile { path }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0_u8; KEY_LEN];
                getrandom::fill(&mut bytes).map_err(|_| SecretKeyError::Random)?;
                let text = STANDARD.encode(bytes);
                std::fs::create_dir_all(data_dir).map_err(file_error)?;
                write_private(&path, &text).map_err(file_error)?;
                tracing::info!(path = %path.display(), "created the key that seals client secrets");
                SecretKey::from_base64(&text).ok_or(SecretKeyError::BadFile { path })
            }
            Err(error) => Err(file_error(error)),
        }
    }

    fn from_base64(text: &str) -> Option<SecretKey> {
        let bytes = STANDARD.decode(text.trim()).ok()?;
        if bytes.len() != KEY_LEN {
            return None;
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes).ok()?;
        Some(SecretKey { key })
    }

    /// Seals a connection's secret: `v1:` and base64 of the nonce, the ciphertext and the tag.
    pub fn seal(&self, connection: &str, secret: &str) -> Result<String, SecretKeyError> {
        let mut in_out = secret.as_bytes().to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(connection.as_bytes()), &mut in_out)
            .map_err(|_| SecretKeyError::Random)?;
        let mut sealed = nonce.as_ref().to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed)))
    }

    /// Opens what `seal` made for the same connection.
    pub fn open(&self, connection: &str, sealed: &str) -> Result<String, SecretKeyError> {
        let wrong = || SecretKeyError::WrongKey {
            connection: connection.to_owned(),
        };
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|text| STANDARD.decode(text).ok())
            .ok_or_else(wrong)?;
        if bytes.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(connection.as_bytes()), &mut in_out)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_connection() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let key = SecretKey::load(dir.path()).expect("a new key");
        let sealed = key.seal("contoso", "s3cret-value").expect("sealed");
        assert!(sealed.starts_with("v1:") && !sealed.contains("s3cret-value"));
        assert_ne!(
            sealed,
            key.seal("contoso", "s3cret-value").expect("sealed"),
            "random nonce"
        );
        assert_eq!(key.open("contoso", &sealed).expect("opens"), "s3cret-value");
        assert!(matches!(
            key.open("fabrikam", &sealed),
            Err(SecretKeyError::WrongKey { .. })
        ));
        let again = SecretKey::load(dir.path()).expect("the same key, from the file");
        assert_eq!(again.open("contoso", &sealed).expect("opens"), "s3cret-value");
        let other = tempfile::tempdir().expect("a temp dir");
        let other = SecretKey::load(other.path()).expect("another key");
        assert!(other.open("contoso", &sealed).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("the key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
