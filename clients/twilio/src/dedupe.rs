//! At-most-once SendSms and MakeCall on top of a provider without idempotency keys: the first
//! result per (operation, connection, idempotency key) is kept in the shared cache and answers
//! every repeat without calling Twilio.
//!
//! Concurrent duplicates: within a replica they queue on a per-key lock and the second one reads
//! the first one's result. Across replicas an "in flight" marker is claimed atomically
//! (`set_if_absent`: Redis `SET NX`) before Twilio is called, and a duplicate that finds it
//! claimed gets ABORTED (retry shortly) instead of sending again.
//!
//! A call refused by Twilio clears the marker, so the caller may try again. After an ambiguous
//! failure (timeout, 5xx: UNKNOWN) the message may have gone out, so the key is marked "maybe
//! sent" and a repeat is refused with FAILED_PRECONDITION rather than risk a second text. When the cache cannot be
//! read the call is refused (UNAVAILABLE) rather than risk a duplicate text.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use maxai_kit::shared_state::Cache;
use maxai_kit::{Error, ErrorKind};
use tonic::Status;

/// Marks a key whose first call is still under way.
const IN_FLIGHT: &[u8] = b"P";
/// Marks a key whose call failed after it may have reached Twilio.
const MAYBE_SENT: &[u8] = b"M";
/// Prefixes a finished call's encoded response.
const DONE: u8 = b'D';
/// How soon a caller that met an in-flight duplicate should try again.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

pub struct Dedupe {
    cache: Arc<dyn Cache>,
    ttl: Duration,
    in_flight_ttl: Duration,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Dedupe {
    pub fn new(cache: Arc<dyn Cache>, ttl: Duration, in_flight_ttl: Duration) -> Self {
        Dedupe {
            cache,
            ttl,
            in_flight_ttl,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `call` once per `(operation, connection, idempotency_key)`; an empty key means the
    /// caller asked for no deduplication.
    pub async fn once<T, F, Fut>(
        &self,
        operation: &str,
        connection: &str,
        idempotency_key: &str,
        call: F,
    ) -> Result<T, Status>
    where
        T: prost::Message + Default,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        if idempotency_key.is_empty() {
            return call().await;
        }
        let key = format!("twilio:once:{operation}:{connection}:{idempotency_key}");
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _guard = lock.lock().await;
            self.once_locked(&key, call).await
        };
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // Two holders (the map and this call) means nobody queues behind it any more.
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) <= 2) {
            locks.remove(&key);
        }
        result
    }

    async fn once_locked<T, F, Fut>(&self, key: &str, call: F) -> Result<T, Status>
    where
        T: prost::Message + Default,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let cached = self.cache.get(key).await.map_err(|e| {
            Status::from(
                Error::new(
                    ErrorKind::Unavailable,
                    "cannot check for an earlier identical request; try again",
                )
                .with_source(e),
            )
        })?;
        match cached.as_deref() {
            Some([DONE, encoded @ ..]) => match T::decode(encoded) {
                Ok(first) => {
                    tracing::info!(key, "answered a repeated request from its first result");
                    return Ok(first);
                }
                // Unreadable (another version wrote it): better to fail than to send twice.
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        "the first result of this idempotency key is unreadable",
                    )
                    .with_source(e)
                    .into())
                }
            },
            Some(MAYBE_SENT) => {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    "an identical request (same idempotency key) failed after it may have been sent; it is not repeated",
                )
                .into())
            }
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "an identical request (same idempotency key) is still in flight",
                )
                .with_retry_after(IN_FLIGHT_RETRY)
                .into())
            }
            None => {}
        }
        match self
            .cache
            .set_if_absent(key, IN_FLIGHT, self.in_flight_ttl)
            .await
        {
            Ok(true) => {}
            // Another replica claimed the key between our read and this write.
            Ok(false) => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "an identical request (same idempotency key) is still in flight",
                )
                .with_retry_after(IN_FLIGHT_RETRY)
                .into())
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "cannot record the request before sending it; try again",
                )
                .with_source(e)
                .into())
            }
        }
        match call().await {
            Ok(response) => {
                let mut value = Vec::with_capacity(1 + response.encoded_len());
                value.push(DONE);
                response.encode_raw(&mut value);
                // The message is out: report it even if the result cannot be kept.
                if let Err(e) = self.cache.set(key, &value, self.ttl).await {
                    tracing::error!(key, error = %e, "could not keep the first result; a repeat may send again");
                }
                Ok(response)
            }
            // The request may have reached Twilio (timeout, 5xx): remember that, so a repeat
            // with this key is refused instead of texting twice.
            Err(status) if status.code() == tonic::Code::Unknown => {
                if let Err(e) = self.cache.set(key, MAYBE_SENT, self.ttl).await {
                    tracing::error!(key, error = %e, "could not record an ambiguous send; a repeat may send again");
                }
                Err(status)
            }
            Err(status) => {
                if let Err(e) = self.cache.delete(key).await {
                    tracing::warn!(key, error = %e, "could not clear the in-flight marker; it expires on its own");
                }
                Err(status)
            }
        }
    }
}
