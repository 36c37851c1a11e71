//! Secrets sealed at rest: AES-256-GCM under the platform's master key, with the owner of each
//! secret (a key id, an endpoint, a connection) as associated data so a ciphertext cannot be
//! moved to another row. IAM's signing keys, webhook endpoint secrets and connected accounts'
//! tokens all go through here.
use std::path::Path;

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Key, Nonce,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result};

/// The AES-256-GCM master key, from config or (embedded default) a key file made on first use.
pub struct MasterKey(Key<Aes256Gcm>);

impl MasterKey {
    pub fn from_config(
        configured: &SecretString,
        data_dir: &Path,
        embedded: bool,
    ) -> anyhow::Result<Self> {
        let raw = configured.expose_secret();
        if !raw.is_empty() {
            let bytes = STANDARD
                .decode(raw.trim())
                .map_err(|_| anyhow::anyhow!("iam.master_key: not base64"))?;
            anyhow::ensure!(
                bytes.len() == 32,
                "iam.master_key: must be 32 bytes (base64 of 32 random bytes)"
            );
            return Ok(MasterKey(*Key::<Aes256Gcm>::from_slice(&bytes)));
        }
        anyhow::ensure!(
            embedded,
            "iam.master_key is required when storage is not the embedded SQLite default"
        );
        let path = data_dir.join("iam-master.key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let bytes = STANDARD
                .decode(text.trim())
                .map_err(|_| anyhow::anyhow!("{}: not base64", path.display()))?;
            anyhow::ensure!(bytes.len() == 32, "{}: must hold 32 bytes", path.display());
            return Ok(MasterKey(*Key::<Aes256Gcm>::from_slice(&bytes)));
        }
        std::fs::create_dir_all(data_dir)?;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        write_private(&path, STANDARD.encode(bytes).as_bytes())?;
        tracing::info!(path = %path.display(), "created a local master key for the embedded key store");
        Ok(MasterKey(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// Seals `plain` for `owner` (the associated data): base64 of nonce ‖ ciphertext.
    pub fn seal(&self, kid: &str, plain: &[u8]) -> Result<String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = Aes256Gcm::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| Error::internal(anyhow::anyhow!("encryption failed")))?;
        Ok(STANDARD.encode([nonce.as_slice(), &ct].concat()))
    }

    /// Opens what [`MasterKey::seal`] sealed for the same `owner`.
    pub fn open(&self, kid: &str, sealed: &str) -> Result<Vec<u8>> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| Error::internal(anyhow::anyhow!("sealed key is not base64")))?;
        if bytes.len() < 12 {
            return Err(Error::internal(anyhow::anyhow!("sealed key too short")));
        }
        let (nonce, ct) = bytes.split_at(12);
        Aes256Gcm::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::internal(anyhow::anyhow!(
                    "signing key {kid} does not open with this master key"
                ))
            })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

impl MasterKey {
    /// The platform's master key for `storage`: the configured one, or — only with the embedded
    /// SQLite default — a key file in the data folder, made on first use.
    pub fn for_storage(
        configured: &SecretString,
        storage: &crate::config::StorageConfig,
    ) -> anyhow::Result<Self> {
        let url = storage.database_url.expose_secret();
        let embedded = match url.strip_prefix("sqlite://") {
            Some(dir) if !dir.is_empty() => Some(std::path::PathBuf::from(dir)),
            _ if url.is_empty() || url.starts_with("sqlite://") => Some(storage.data_dir.clone()),
            _ => None,
        };
        Self::from_config(
            configured,
            embedded.as_deref().unwrap_or(Path::new(".")),
            embedded.is_some(),
        )
    }

    /// A key from raw bytes (tests, and keys held elsewhere).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(*Key::<Aes256Gcm>::from_slice(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_binds_to_the_owner_and_the_master_key() {
        let a = MasterKey::from_bytes([7u8; 32]);
        let b = MasterKey::from_bytes([8u8; 32]);
        let sealed = a.seal("k1", b"secret seed").unwrap();
        assert_eq!(a.open("k1", &sealed).unwrap(), b"secret seed");
        assert!(
            a.open("k2", &sealed).is_err(),
            "moved to another owner's row"
        );
        assert!(b.open("k1", &sealed).is_err(), "another master key");
        assert!(!sealed.contains(&STANDARD.encode(b"secret seed")));
    }
}
