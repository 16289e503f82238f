//! Encryption at rest of ConnectWise private keys: AES-256-GCM under `SECRETS_KEY`.
use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use secrecy::{ExposeSecret, SecretString};

/// Encrypts and decrypts small secrets. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("the stored secret could not be decrypted (wrong SECRETS_KEY or corrupted data)")]
    Decrypt,
}

const NONCE_LEN: usize = 12;

impl SecretBox {
    pub fn from_base64(key: &SecretString) -> Result<Self, CryptoError> {
        let bytes = B64.decode(key.expose_secret().trim()).map_err(|_| CryptoError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| CryptoError::BadKey)?;
        Ok(Self { cipher })
    }

    /// A fresh random key, base64-encoded (for the embedded default's generated key file).
    pub fn generate_key_base64() -> String {
        B64.encode(Aes256Gcm::generate_key(OsRng))
    }

    /// `base64(nonce ‖ ciphertext ‖ tag)`; a fresh nonce each time.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, CryptoError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self.cipher.encrypt(&nonce, plaintext.as_bytes()).map_err(|_| CryptoError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(B64.encode(out))
    }

    pub fn decrypt(&self, stored: &str) -> Result<SecretString, CryptoError> {
        let raw = B64.decode(stored).map_err(|_| CryptoError::Decrypt)?;
        if raw.len() <= NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let pt = self.cipher.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(pt).map(SecretString::from).map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fresh_nonce() {
        let key = SecretString::from(SecretBox::generate_key_base64());
        let sb = SecretBox::from_base64(&key).expect("key");
        let a = sb.encrypt("s3cret").expect("enc");
        let b = sb.encrypt("s3cret").expect("enc");
        assert_ne!(a, b);
        assert!(!a.contains("s3cret"));
        assert_eq!(sb.decrypt(&a).expect("dec").expose_secret(), "s3cret");
        assert!(format!("{sb:?}").contains("redacted"));
    }

    #[test]
    fn wrong_key_fails_to_decrypt() {
        let a = SecretBox::from_bytes(&[1; 32]).expect("key");
        let b = SecretBox::from_bytes(&[2; 32]).expect("key");
        assert!(b.decrypt(&a.encrypt("x").expect("enc")).is_err());
        assert!(SecretBox::from_bytes(&[0; 16]).is_err());
    }
}
