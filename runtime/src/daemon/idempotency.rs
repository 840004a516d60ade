//! `Idempotency-Key` on POSTs: the first response to a key (per API key, method and path) is
//! stored durably with a hash of the request body, and a retry with the same key gets that
//! response again (`idempotent-replayed: true`) instead of creating twice. The same key with a
//! different body is refused (422); a retry while the first is still running gets 409.
//! Records live [`IDEMPOTENCY_TTL`] and are removed by a sweep.
//!
//! A record never holds a secret: a handler whose response carries one (a new API key, a
//! webhook's signing key) marks it with [`Secrets`], those fields are left out of the stored
//! body, and a replay says so in `idempotent-withheld: <fields>` (the secret was shown once;
//! a client that lost it rotates the key).

use std::time::Duration;

use aios_actors::records::Records;
use aios_supervisor::snapshot::Durability;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::http::{Problem, Shared};
use super::keys::Principal;

/// How long a key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Responses larger than this are not stored (the retry then runs again).
pub const STORED_RESPONSE_MAX: usize = 1024 * 1024;
const PREFIX: &str = aios_core::keyspace::IDEMPOTENCY;

#[derive(Serialize, Deserialize)]
struct Stored {
    request_hash: Vec<u8>,
    status: u16,
    content_type: String,
    body: Vec<u8>,
    at_ms: u64,
    /// Top-level fields of the JSON body left out because they are secrets.
    #[serde(default)]
    withheld: Vec<String>,
}

/// A record as release 0.1 wrote it (before `withheld`).
#[derive(Deserialize)]
struct StoredV1 {
    request_hash: Vec<u8>,
    status: u16,
    content_type: String,
    body: Vec<u8>,
    at_ms: u64,
}

/// The record at `key`: today's form or 0.1's (bincode has no optional fields); `None` when
/// there is none or it cannot be read (then it is a miss, and the sweeper removes it).
async fn read_stored(records: &Records, key: &str) -> Result<Option<Stored>, String> {
    if let Ok(found) = records.get::<Stored>(key).await {
        return Ok(found);
    }
    match records.get::<StoredV1>(key).await {
        Ok(found) => Ok(found.map(|v| Stored {
            request_hash: v.request_hash,
            status: v.status,
            content_type: v.content_type,
            body: v.body,
            at_ms: v.at_ms,
            withheld: Vec::new(),
        })),
        Err(e) => {
            tracing::warn!(key, error = %e, "an unreadable idempotency record is treated as absent");
            Ok(None)
        }
    }
}

/// A response extension: the top-level fields of the JSON body that are secrets, which an
/// idempotency record must not keep.
#[derive(Clone, Copy, Debug)]
pub struct Secrets(pub &'static [&'static str]);

/// `body` without the top-level `fields` (a body that is not a JSON object is kept whole:
/// then nothing is stored at all, see the caller).
fn withhold(body: &[u8], fields: &[&str]) -> Option<(Vec<u8>, Vec<String>)> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    let withheld = fields
        .iter()
        .filter(|f| obj.remove(**f).is_some())
        .map(|f| (*f).to_string())
        .collect();
    Some((serde_json::to_vec(&v).ok()?, withheld))
}

fn record_key(p: &Principal, method: &Method, path: &str, key: &str) -> String {
    let h = Sha256::digest(format!("{method} {path} {key}").as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{}/{hex}", p.key_id)
}

/// The middleware (inside authentication, so the principal is known).
pub async fn idempotency(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k)
            if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            k.to_string()
        }
        _ => {
            return Problem::bad_request("Idempotency-Key: 1..=255 visible ASCII characters")
                .into_response();
        }
    };
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, s.config.body_limit_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
            .into_response();
        }
    };
    let request_hash = Sha256::digest(&bytes).to_vec();
    let rkey = record_key(&principal, &parts.method, parts.uri.path(), &key);
    let records = Records::new(s.rt.snapshots().clone());
    // An expired record at this key is overwritten: the new one takes its place in the count.
    let expired = match read_stored(&records, &rkey).await {
        Ok(Some(stored))
            if aios_actors::protocol::unix_ms().saturating_sub(stored.at_ms)
                < IDEMPOTENCY_TTL.as_millis() as u64 =>
        {
            if stored.request_hash != request_hash {
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used with a different request",
                )
                .into_response();
            }
            return replay(stored);
        }
        Ok(found) => found.is_some(),
        Err(e) => return Problem::internal(e).into_response(),
    };
    // One request per key at a time.
    if s.idempotency_in_flight.insert(rkey.clone(), ()).is_some() {
        return Problem::conflict("a request with this Idempotency-Key is still running")
            .into_response();
    }
    let _in_flight = InFlight(&s, rkey.clone());
    if !expired && let Some(refused) = take_place(&s, &principal) {
        return refused;
    }
    let mut place = Place {
        counts: &s.idempotency_counts,
        key_id: &principal.key_id,
        // An overwritten record's place stays taken whatever happens.
        kept: expired,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (response, kept) = keep(&records, &rkey, response, request_hash).await;
    place.kept |= kept;
    response
}

/// The stored response of an earlier request with the same key, marked as replayed.
fn replay(stored: Stored) -> Response {
    let mut r = Response::new(Body::from(stored.body));
    *r.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&stored.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    if !stored.withheld.is_empty()
        && let Ok(v) = HeaderValue::from_str(&stored.withheld.join(", "))
    {
        r.headers_mut().insert("idempotent-withheld", v);
    }
    r
}

/// Takes a place among the records of the caller's tenant; the refusal (429) when there is
/// none. A tenant keeps a bounded number of records; beyond, a request with a key is refused
/// rather than run without the protection it asked for.
fn take_place(s: &Shared, principal: &Principal) -> Option<Response> {
    let mut tenant_keys: Vec<String> = s
        .keys
        .list(Some(&principal.tenant))
        .into_iter()
        .map(|k| k.id)
        .collect();
    // The caller's key counts even when it is not a stored key (`insecure_no_auth`).
    if !tenant_keys.contains(&principal.key_id) {
        tenant_keys.push(principal.key_id.clone());
    }
    let max = s.config.tenants.idempotency_records_max;
    let Err(held) = s
        .idempotency_counts
        .take(&principal.key_id, &tenant_keys, max)
    else {
        return None;
    };
    let mut p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "tenant {} keeps {held} Idempotency-Key responses, the most it may \
             ([tenants] idempotency_records_max = {max}); they expire 24 h after their \
             request",
            principal.tenant
        ),
    );
    p.retry_after_s = Some(3600);
    Some(p.into_response())
}

/// Stores `response` under `rkey` when it is worth replaying (a success or a client error,
/// not a 5xx or a 429), its secrets withheld; the response to send, and whether a record was
/// stored.
async fn keep(
    records: &Records,
    rkey: &str,
    response: Response,
    request_hash: Vec<u8>,
) -> (Response, bool) {
    let status = response.status();
    if !(status.is_success()
        || (status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS))
    {
        return (response, false);
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, STORED_RESPONSE_MAX).await else {
        let p = Problem::internal("the response was too large to keep for Idempotency-Key");
        return (p.into_response(), false);
    };
    let (stored_body, withheld) = match parts.extensions.get::<Secrets>() {
        None => (body.to_vec(), Vec::new()),
        Some(Secrets(fields)) => match withhold(&body, fields) {
            Some(x) => x,
            // A secret in a body that cannot be redacted is not stored: a retry runs again.
            None => return (Response::from_parts(parts, Body::from(body)), false),
        },
    };
    let stored = Stored {
        withheld,
        request_hash,
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
        body: stored_body,
        at_ms: aios_actors::protocol::unix_ms(),
    };
    let kept = match records.put(rkey, &stored, Durability::Durable).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "storing an idempotent response");
            false
        }
    };
    (Response::from_parts(parts, Body::from(body)), kept)
}

/// The idempotency records this node stores, per API key: counted from the store at start,
/// then kept up to date as records are written and swept. A tenant's count is the sum over
/// its keys. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Counts(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

impl Counts {
    /// Counts the stored records (keys only, 512 at a time).
    ///
    /// # Errors
    /// Store failures.
    pub async fn load(records: &Records) -> Result<Self, String> {
        let mut counts = std::collections::HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let keys = records
                .keys_after(PREFIX, after.as_deref(), 512)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for k in &keys {
                if let Some((key_id, _)) = k.trim_start_matches(PREFIX).split_once('/') {
                    *counts.entry(key_id.to_string()).or_insert(0) += 1;
                }
            }
            after = Some(last);
        }
        Ok(Self(std::sync::Arc::new(std::sync::Mutex::new(counts))))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        // Invariant: nothing panics while this is held (counter updates).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for one more record of `key_id` unless the keys of its tenant
    /// (`tenant_keys`) hold `max` already; returns the tenant's count when it is full.
    fn take(&self, key_id: &str, tenant_keys: &[String], max: usize) -> Result<(), usize> {
        let mut map = self.map();
        let held: usize = tenant_keys.iter().filter_map(|k| map.get(k)).sum();
        if held >= max {
            return Err(held);
        }
        *map.entry(key_id.to_string()).or_insert(0) += 1;
        Ok(())
    }

    /// Gives back a place: a record was not written, or was swept.
    fn put_back(&self, key_id: &str) {
        let mut map = self.map();
        if let Some(n) = map.get_mut(key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(key_id);
            }
        }
    }
}

/// Gives a place back unless the record was written.
struct Place<'a> {
    counts: &'a Counts,
    key_id: &'a str,
    kept: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.counts.put_back(self.key_id);
        }
    }
}

struct InFlight<'a>(&'a Shared, String);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.idempotency_in_flight.remove(&self.1);
    }
}

/// Removes expired records every hour until `stop`, giving their places back to `counts`.
pub fn spawn_sweeper(records: Records, counts: Counts, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
            let mut after: Option<String> = None;
            let now = aios_actors::protocol::unix_ms();
            loop {
                let Ok(keys) = records.keys_after(PREFIX, after.as_deref(), 512).await else {
                    break;
                };
                let Some(last) = keys.last().cloned() else {
                    break;
                };
                for k in keys {
                    let expired = match read_stored(&records, &k).await {
                        Ok(Some(s)) => {
                            now.saturating_sub(s.at_ms) >= IDEMPOTENCY_TTL.as_millis() as u64
                        }
                        // Listed but unreadable: nothing can replay it.
                        Ok(None) => true,
                        Err(_) => false,
                    };
                    if expired
                        && records.delete(&k).await.is_ok()
                        && let Some((key_id, _)) = k.trim_start_matches(PREFIX).split_once('/')
                    {
                        counts.put_back(key_id);
                    }
                }
                after = Some(last);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use aios_supervisor::snapshot::{SledStore, Snapshots};

    /// A record as release 0.1 wrote it.
    #[derive(Serialize)]
    struct V1 {
        request_hash: Vec<u8>,
        status: u16,
        content_type: String,
        body: Vec<u8>,
        at_ms: u64,
    }

    #[tokio::test]
    async fn a_record_written_by_release_0_1_is_read_and_an_unreadable_one_is_a_miss() {
        let records = Records::new(Snapshots::new(std::sync::Arc::new(
            SledStore::temporary().unwrap(),
        )));
        let old = V1 {
            request_hash: vec![1, 2],
            status: 201,
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
            at_ms: 7,
        };
        records
            .put(&format!("{PREFIX}k/old"), &old, Durability::Durable)
            .await
            .unwrap();
        let read = read_stored(&records, &format!("{PREFIX}k/old"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((read.status, read.at_ms, read.withheld.len()), (201, 7, 0));
        records
            .put(
                &format!("{PREFIX}k/junk"),
                &"not a record",
                Durability::Durable,
            )
            .await
            .unwrap();
        assert!(
            read_stored(&records, &format!("{PREFIX}k/junk"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            read_stored(&records, &format!("{PREFIX}k/none"))
                .await
                .unwrap()
                .is_none()
        );
    }
}
