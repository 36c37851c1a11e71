//! Access tokens: short-lived EdDSA JWTs with a `kid`, signed by keys kept encrypted at rest
//! (AES-256-GCM under the master key, the key id as associated data so a ciphertext cannot be
//! moved to another key's row) and rotated with an overlap window in which the previous key
//! still verifies. `maxai token` mints from here, and the JWKS publishes the public halves.
use std::{sync::RwLock, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use maxai_kit::{on_db, storage::now_micros, storage::Db, Error, ErrorKind, Result};
use rand::RngCore;

pub use maxai_kit::auth::{Claims as AccessClaims, AUDIENCE};

pub use maxai_kit::sealed::MasterKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KeyState::Active),
            "retiring" => Some(KeyState::Retiring),
            "retired" => Some(KeyState::Retired),
            _ => None,
        }
    }
}

/// One signing key as published (no private material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub state: KeyState,
    /// Ed25519 public key, base64url without padding (the JWK `x`).
    pub x: String,
    pub created_at_us: i64,
    pub rotated_at_us: Option<i64>,
    pub retire_at_us: Option<i64>,
}

struct LoadedKey {
    public: PublicKey,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
}

/// The signing keys of the platform, loaded from storage.
pub struct KeyRing {
    db: Db,
    master: MasterKey,
    issuer: String,
    ttl: Duration,
    keys: RwLock<Vec<LoadedKey>>,
}

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): a fixed prefix and the 32 bytes.
fn pkcs8_ed25519(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

/// kid, state, public key, created, rotated, retire-at.
type PublicRow = (String, String, String, i64, Option<i64>, Option<i64>);

type KeyRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

impl KeyRing {
    /// Loads the keys, making the first one when there is none.
    pub async fn open(db: Db, master: MasterKey, issuer: String, ttl: Duration) -> Result<Self> {
        let ring = KeyRing {
            db,
            master,
            issuer,
            ttl,
            keys: RwLock::new(Vec::new()),
        };
        ring.reload().await?;
        if ring.active().is_none() {
            ring.rotate(Duration::ZERO).await?;
        }
        Ok(ring)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn reload(&self) -> Result<()> {
        let now = now_micros();
        // Keys past their window are retired for good: state changed, private half destroyed.
        on_db!(&self.db, |pool| {
            sqlx::query(
            "UPDATE signing_keys SET state = 'retired', private_key = '' WHERE state = 'retiring' AND retire_at_us <= $1"
        )
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        let rows: Vec<KeyRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(
            "SELECT kid, state, private_key, public_key, created_at_us, rotated_at_us, retire_at_us FROM signing_keys \
             WHERE state <> 'retired' ORDER BY created_at_us DESC"
        )
        .fetch_all(pool)
        .await
        })?;
        let mut keys = Vec::new();
        for (kid, state, private, x, created_at_us, rotated_at_us, retire_at_us) in rows {
            let state = KeyState::parse(&state).ok_or_else(|| {
                Error::internal(anyhow::anyhow!("key {kid} has an unknown state"))
            })?;
            let encoding = if state == KeyState::Active {
                let seed = self.master.open(&kid, &private)?;
                let seed: [u8; 32] = seed
                    .try_into()
                    .map_err(|_| Error::internal(anyhow::anyhow!("key {kid} is not 32 bytes")))?;
                Some(EncodingKey::from_ed_der(&pkcs8_ed25519(&seed)))
            } else {
                None
            };
            let decoding = DecodingKey::from_ed_components(&x).map_err(Error::internal)?;
            keys.push(LoadedKey {
                public: PublicKey {
                    kid,
                    state,
                    x,
                    created_at_us,
                    rotated_at_us,
                    retire_at_us,
                },
                encoding,
                decoding,
            });
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    fn active(&self) -> Option<String> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|k| k.public.state == KeyState::Active)
            .map(|k| k.public.kid.clone())
    }

    /// Makes a new active key; the previous keys keep verifying for at most `grace`.
    pub async fn rotate(&self, grace: Duration) -> Result<PublicKey> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let kid = format!("k{}", uuid::Uuid::new_v4().simple());
        let sealed = self.master.seal(&kid, &seed)?;
        let x = URL_SAFE_NO_PAD.encode(public);
        let now = now_micros();
        let retire_at = now + i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let outcome: std::result::Result<(), sqlx::Error> = on_db!(&self.db, |pool| {
            async {
            let mut tx = pool.begin().await?;
            // A rotation's grace caps every older key's window too, so an emergency rotation
            // with no grace retires everything that came before at once.
            sqlx::query("UPDATE signing_keys SET retire_at_us = $1 WHERE state = 'retiring' AND retire_at_us > $1")
                .bind(retire_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE signing_keys SET state = 'retiring', rotated_at_us = $1, retire_at_us = $2 WHERE state = 'active'")
                .bind(now)
                .bind(retire_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, state, private_key, public_key, created_at_us) VALUES ($1, 'EdDSA', 'active', $2, $3, $4)",
            )
            .bind(&kid)
            .bind(&sealed)
            .bind(&x)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await
        });
        outcome?;
        self.reload().await?;
        tracing::info!(kid = %kid, "signing key rotated");
        Ok(PublicKey {
            kid,
            state: KeyState::Active,
            x,
            created_at_us: now,
            rotated_at_us: None,
            retire_at_us: None,
        })
    }

    /// Every key with its state, retired ones too when asked (no private material).
    pub async fn all(&self, include_retired: bool) -> Result<Vec<PublicKey>> {
        self.reload().await?;
        let rows: Vec<PublicRow> = on_db!(&self.db, |pool| {
            sqlx::query_as(
                    "SELECT kid, state, public_key, created_at_us, rotated_at_us, retire_at_us FROM signing_keys \
                     WHERE state <> 'retired' OR $1",
                )
                .bind(include_retired)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter()
            .map(
                |(kid, state, x, created_at_us, rotated_at_us, retire_at_us)| {
                    let state = KeyState::parse(&state).ok_or_else(|| {
                        Error::internal(anyhow::anyhow!("key {kid} has an unknown state"))
                    })?;
                    Ok(PublicKey {
                        kid,
                        state,
                        x,
                        created_at_us,
                        rotated_at_us,
                        retire_at_us,
                    })
                },
            )
            .collect()
    }

    /// Keys published in the JWKS: the active one and those still in their overlap window.
    pub fn published(&self) -> Vec<PublicKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|k| k.public.clone())
            .collect()
    }

    /// Reloads the keys from storage (another replica rotated, or a key's window ended).
    pub async fn refresh(&self) -> Result<()> {
        self.reload().await
    }

    /// Issues an access token for `subject` (a principal of `tenant_id`).
    pub fn issue(
        &self,
        subject: &str,
        tenant_id: &str,
        ttl: Option<Duration>,
    ) -> Result<(String, AccessClaims)> {
        let claims = self.claims(subject, tenant_id, ttl);
        Ok((self.sign(&claims)?, claims))
    }

    /// The claims [`KeyRing::issue`] would sign, to adjust before [`KeyRing::sign`].
    pub fn claims(&self, subject: &str, tenant_id: &str, ttl: Option<Duration>) -> AccessClaims {
        let now = now_micros() / 1_000_000;
        let ttl = ttl.unwrap_or(self.ttl).as_secs() as i64;
        AccessClaims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: AUDIENCE.to_owned(),
            tid: tenant_id.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti: uuid::Uuid::now_v7().to_string(),
            key: String::new(),
        }
    }

    /// Signs `claims` as they are with the active key (tokens for tests and service tokens).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = keys
            .iter()
            .find(|k| k.public.state == KeyState::Active)
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "no active signing key"))?;
        let encoding = key.encoding.as_ref().ok_or_else(|| {
            Error::internal(anyhow::anyhow!("active key without its private half"))
        })?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.public.kid.clone());
        jsonwebtoken::encode(&header, claims, encoding).map_err(Error::internal)
    }

    /// Verifies signature, issuer, audience and lifetime; an unknown or retired `kid` is refused.
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        let unauthenticated =
            || Error::new(ErrorKind::Unauthenticated, "the access token is not valid");
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated())?;
        let kid = header.kid.ok_or_else(unauthenticated)?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = keys
            .iter()
            .find(|k| k.public.kid == kid)
            .ok_or_else(unauthenticated)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|_| unauthenticated())
    }
}

/// The JWK form of a published key.
pub fn jwk(key: &PublicKey) -> maxai_proto::maxai::iam::v1::Jwk {
    maxai_proto::maxai::iam::v1::Jwk {
        kty: "OKP".into(),
        kid: key.kid.clone(),
        alg: "EdDSA".into(),
        key_use: "sig".into(),
        crv: "Ed25519".into(),
        x: key.x.clone(),
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl maxai_kit::auth::KeySource for KeyRing {
    async fn jwks(&self) -> Result<Vec<maxai_proto::maxai::iam::v1::Jwk>> {
        // Another replica may have rotated: read storage, not only this process's copy.
        self.reload().await?;
        Ok(self.published().iter().map(jwk).collect())
    }
}
