//! API keys: `aios_<id>_<secret>`, where `id` is a public 12-hex-digit prefix and `secret` is
//! 256 random bits (base64url). Only SHA-256 of the secret is stored (a 256-bit random secret
//! needs no slow hash); comparisons are constant-time. Keys carry a role and a tenant, may
//! expire, are revoked at once (the next request fails), and are rotated with an overlap
//! window during which the old key still works.

use std::sync::Arc;

use aios_actors::records::Records;
use aios_supervisor::snapshot::Durability;
use base64::Engine as _;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Keys kept at most.
pub const KEYS_MAX: usize = 10_000;
/// The longest overlap a rotation may ask for.
pub const ROTATION_OVERLAP_MAX_MS: u64 = 30 * 24 * 3600 * 1000;
/// The tenant of the first admin key; its admins may create keys for other tenants.
pub const OPERATOR_TENANT: &str = "default";

const KEY_PREFIX: &str = aios_core::keyspace::API_KEY;

/// What a key may do. Each role includes the ones below it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything of its tenant.
    Viewer,
    /// Also run agents, write memory, test tools, restart actors.
    Operator,
    /// Also manage keys, tools, webhooks, quotas and read the audit log.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// A stored key (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public id (the prefix of the secret).
    pub id: String,
    /// A label.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tenant.
    pub tenant: String,
    /// SHA-256 of the secret part.
    pub hash: Vec<u8>,
    /// Unix ms.
    pub created_ms: u64,
    /// After this (unix ms), it no longer works.
    pub expires_ms: Option<u64>,
    /// When it was revoked (unix ms).
    pub revoked_ms: Option<u64>,
    /// The key that replaced it in a rotation.
    pub replaced_by: Option<String>,
}

/// A key as shown by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The public id.
    pub id: String,
    /// Its label.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tenant.
    pub tenant: String,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub expires_ms: Option<u64>,
    /// Unix ms.
    pub revoked_ms: Option<u64>,
    /// The key that replaced it.
    pub replaced_by: Option<String>,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            tenant: r.tenant.clone(),
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            revoked_ms: r.revoked_ms,
            replaced_by: r.replaced_by.clone(),
        }
    }
}

/// Who a request comes from, once its key is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's id.
    pub key_id: String,
    /// Its role.
    pub role: Role,
    /// Its tenant.
    pub tenant: String,
}

/// Why a key was refused. Everything but `Missing` is a 401 with this text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key in the request.
    #[error("an API key is required (Authorization: Bearer aios_…)")]
    Missing,
    /// Not of the form `aios_<id>_<secret>`.
    #[error("the API key is malformed")]
    Malformed,
    /// Unknown id, or the secret does not match.
    #[error("the API key is not valid")]
    Invalid,
    /// Revoked.
    #[error("the API key {0} has been revoked")]
    Revoked(String),
    /// Expired.
    #[error("the API key {0} has expired")]
    Expired(String),
}

/// Why a key operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such key (in the caller's tenant).
    #[error("no key {0}")]
    NotFound(String),
    /// Too many keys.
    #[error("at most {KEYS_MAX} keys")]
    Full,
    /// The store failed.
    #[error("key store: {0}")]
    Store(String),
}

/// A new key: its record and the secret, shown once.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// The stored part.
    pub info: KeyInfo,
    /// The whole key, `aios_<id>_<secret>`; not kept anywhere.
    pub secret: String,
}

/// The keys of a daemon. Cheap to clone. Its `Debug` shows the count only.
#[derive(Clone)]
pub struct KeyStore {
    records: Records,
    keys: Arc<DashMap<String, Arc<KeyRecord>>>,
    write: Arc<tokio::sync::Mutex<()>>,
    /// Bumped on every change of a key (here or, after a reload, on another node), so open
    /// streams can check that their key still holds.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// How often a stream's key is checked for expiry, at most this long after it expires.
pub const KEY_EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

fn now_ms() -> u64 {
    aios_actors::protocol::unix_ms()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Store(format!("no randomness: {e}")))?;
    Ok(b)
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub use aios_core::name::validate_tenant;

/// Splits `aios_<id>_<secret>`.
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("aios_")?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

impl KeyStore {
    /// Loads the keys.
    ///
    /// # Errors
    /// Store failures.
    pub async fn open(records: Records) -> Result<Self, KeyError> {
        let keys = Self::load(&records).await?;
        Ok(Self {
            records,
            keys: Arc::new(keys),
            write: Arc::new(tokio::sync::Mutex::new(())),
            changed: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Whether key `id` is live now (known, not revoked, not expired).
    pub fn is_live(&self, id: &str) -> bool {
        self.keys
            .get(id)
            .is_some_and(|r| r.revoked_ms.is_none() && r.expires_ms.is_none_or(|e| now_ms() < e))
    }

    /// Resolves once key `id` is no longer live: revoked or removed (at once when that
    /// happens on this node, after the next reload on another), or expired (within
    /// [`KEY_EXPIRY_CHECK`]). Streams opened with the key end then.
    pub async fn gone(&self, id: &str) {
        let mut changes = self.changed.subscribe();
        while self.is_live(id) {
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        // The store is gone: so is the key.
                        return;
                    }
                }
                () = tokio::time::sleep(KEY_EXPIRY_CHECK) => {}
            }
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reads the keys again from the store, for a store that other nodes write too: keys
    /// created, rotated or revoked there take effect here. Returns how many changed.
    ///
    /// # Errors
    /// Store failures; the keys in memory are then kept.
    pub async fn reload(&self) -> Result<usize, KeyError> {
        // Under the write lock, so a key this node writes meanwhile is not dropped.
        let _write = self.write.lock().await;
        let fresh = Self::load(&self.records).await?;
        let mut changed = 0;
        self.keys.retain(|id, _| {
            let keep = fresh.contains_key(id);
            changed += usize::from(!keep);
            keep
        });
        for (id, record) in fresh {
            let same = self.keys.get(&id).is_some_and(|r| **r == *record);
            if !same {
                changed += 1;
                self.keys.insert(id, record);
            }
        }
        if changed > 0 {
            self.bump();
        }
        Ok(changed)
    }

    async fn load(records: &Records) -> Result<DashMap<String, Arc<KeyRecord>>, KeyError> {
        let keys = DashMap::new();
        for key in records
            .keys(KEY_PREFIX, KEYS_MAX)
            .await
            .map_err(|e| KeyError::Store(e.to_string()))?
        {
            if let Some(r) = records
                .get::<KeyRecord>(&key)
                .await
                .map_err(|e| KeyError::Store(e.to_string()))?
            {
                keys.insert(r.id.clone(), Arc::new(r));
            }
        }
        Ok(keys)
    }

    /// Whether no key exists yet (the first start).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a presented key.
    ///
    /// # Errors
    /// [`AuthError`].
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let (id, secret) = parse(token).ok_or(AuthError::Malformed)?;
        let presented = Sha256::digest(secret.as_bytes());
        // Unknown ids are compared against a dummy so both paths do the same work.
        let record = self.keys.get(id).map(|r| r.clone());
        let stored: &[u8] = record.as_ref().map_or(&[0u8; 32][..], |r| &r.hash[..]);
        let matches: bool = presented.as_slice().ct_eq(stored).into();
        let record = match record {
            Some(r) if matches => r,
            _ => return Err(AuthError::Invalid),
        };
        if record.revoked_ms.is_some() {
            return Err(AuthError::Revoked(record.id.clone()));
        }
        if record.expires_ms.is_some_and(|e| now_ms() >= e) {
            return Err(AuthError::Expired(record.id.clone()));
        }
        Ok(Principal {
            key_id: record.id.clone(),
            role: record.role,
            tenant: record.tenant.clone(),
        })
    }

    /// Creates a key; the secret is in the result only.
    ///
    /// # Errors
    /// A bad name or tenant, too many keys, a store failure.
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        tenant: &str,
        expires_ms: Option<u64>,
    ) -> Result<NewKey, KeyError> {
        validate_tenant(tenant).map_err(KeyError::Invalid)?;
        if name.len() > 128 || name.chars().any(char::is_control) {
            return Err(KeyError::Invalid(
                "name: at most 128 characters, no control characters".into(),
            ));
        }
        if expires_ms.is_some_and(|e| e <= now_ms()) {
            return Err(KeyError::Invalid(
                "expires_ms: must be in the future".into(),
            ));
        }
        let _w = self.write.lock().await;
        if self.keys.len() >= KEYS_MAX {
            return Err(KeyError::Full);
        }
        let id_bytes = random_bytes::<6>()?;
        let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let record = KeyRecord {
            id: id.clone(),
            name: name.to_string(),
            role,
            tenant: tenant.to_string(),
            hash: hash(&secret),
            created_ms: now_ms(),
            expires_ms,
            revoked_ms: None,
            replaced_by: None,
        };
        self.save(&record).await?;
        Ok(NewKey {
            info: KeyInfo::from(&record),
            secret: format!("aios_{id}_{secret}"),
        })
    }

    /// Takes a complete key given from outside (the first admin key, from the
    /// environment), as an admin of [`OPERATOR_TENANT`].
    ///
    /// # Errors
    /// A malformed key, an id already taken, a store failure.
    pub async fn import_admin(&self, token: &str) -> Result<KeyInfo, KeyError> {
        let (id, secret) = parse(token).ok_or_else(|| {
            KeyError::Invalid(
                "the admin key must look like aios_<12 hex digits>_<43 base64url characters>"
                    .into(),
            )
        })?;
        let _w = self.write.lock().await;
        if self.keys.contains_key(id) {
            return Err(KeyError::Invalid(format!("key id {id} is taken")));
        }
        let record = KeyRecord {
            id: id.to_string(),
            name: "admin (from the environment)".into(),
            role: Role::Admin,
            tenant: OPERATOR_TENANT.into(),
            hash: hash(secret),
            created_ms: now_ms(),
            expires_ms: None,
            revoked_ms: None,
            replaced_by: None,
        };
        self.save(&record).await?;
        Ok(KeyInfo::from(&record))
    }

    async fn save(&self, record: &KeyRecord) -> Result<(), KeyError> {
        self.records
            .put(
                &format!("{KEY_PREFIX}{}", record.id),
                record,
                Durability::Durable,
            )
            .await
            .map_err(|e| KeyError::Store(e.to_string()))?;
        self.keys
            .insert(record.id.clone(), Arc::new(record.clone()));
        self.bump();
        Ok(())
    }

    fn get_in(&self, id: &str, tenant: Option<&str>) -> Result<KeyRecord, KeyError> {
        self.keys
            .get(id)
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .map(|r| (**r).clone())
            .ok_or_else(|| KeyError::NotFound(id.to_string()))
    }

    /// Revokes a key (of `tenant`, when given); it fails from the next request on.
    ///
    /// # Errors
    /// An unknown key, a store failure.
    pub async fn revoke(&self, id: &str, tenant: Option<&str>) -> Result<KeyInfo, KeyError> {
        let _w = self.write.lock().await;
        let mut r = self.get_in(id, tenant)?;
        if r.revoked_ms.is_none() {
            r.revoked_ms = Some(now_ms());
            self.save(&r).await?;
        }
        Ok(KeyInfo::from(&r))
    }

    /// Rotates a key: a new key with the same role and tenant; the old one keeps working for
    /// `overlap_ms`, then expires.
    ///
    /// # Errors
    /// An unknown, revoked, expired or already rotated key, an overlap over
    /// [`ROTATION_OVERLAP_MAX_MS`], a store failure.
    pub async fn rotate(
        &self,
        id: &str,
        tenant: Option<&str>,
        overlap_ms: u64,
    ) -> Result<NewKey, KeyError> {
        if overlap_ms > ROTATION_OVERLAP_MAX_MS {
            return Err(KeyError::Invalid(format!(
                "overlap_ms: at most {ROTATION_OVERLAP_MAX_MS}"
            )));
        }
        let old = self.get_in(id, tenant)?;
        if old.revoked_ms.is_some() {
            return Err(KeyError::Invalid(format!("key {id} is revoked")));
        }
        // A rotated key's expiry is its overlap window: a second rotation would hand that
        // short expiry to another new key, so it is refused, as is rotating an expired key.
        if let Some(next) = &old.replaced_by {
            return Err(KeyError::Invalid(format!(
                "key {id} was already rotated; rotate its replacement {next} instead"
            )));
        }
        if old.expires_ms.is_some_and(|e| e <= now_ms()) {
            return Err(KeyError::Invalid(format!(
                "key {id} has expired; create a new key instead"
            )));
        }
        let new = self
            .create(&old.name, old.role, &old.tenant, old.expires_ms)
            .await?;
        let w = self.write.lock().await;
        let mut old = self.get_in(id, tenant)?;
        if old.replaced_by.is_some() || old.revoked_ms.is_some() {
            // Another rotation (or a revocation) won the race: the key just made must not
            // stay live untracked.
            drop(w);
            self.revoke(&new.info.id, None).await?;
            return Err(KeyError::Invalid(format!(
                "key {id} was rotated or revoked meanwhile"
            )));
        }
        let until = now_ms().saturating_add(overlap_ms);
        old.expires_ms = Some(old.expires_ms.map_or(until, |e| e.min(until)));
        old.replaced_by = Some(new.info.id.clone());
        self.save(&old).await?;
        Ok(new)
    }

    /// The key with public id `id`.
    pub fn get(&self, id: &str) -> Option<KeyInfo> {
        self.keys.get(id).map(|r| KeyInfo::from(&**r))
    }

    /// The keys of `tenant` (all keys when `None`), by id.
    pub fn list(&self, tenant: Option<&str>) -> Vec<KeyInfo> {
        let mut out: Vec<KeyInfo> = self
            .keys
            .iter()
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .map(|r| KeyInfo::from(&**r))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aios_supervisor::snapshot::{SledStore, Snapshots};

    async fn store() -> KeyStore {
        let snapshots = Snapshots::new(Arc::new(SledStore::temporary().unwrap()));
        KeyStore::open(Records::new(snapshots)).await.unwrap()
    }

    #[tokio::test]
    async fn keys_authenticate_expire_rotate_and_revoke() {
        let keys = store().await;
        let k = keys
            .create("ci", Role::Operator, "acme", None)
            .await
            .unwrap();
        assert!(k.secret.starts_with(&format!("aios_{}_", k.info.id)));
        let p = keys.authenticate(Some(&k.secret)).unwrap();
        assert_eq!((p.role, p.tenant.as_str()), (Role::Operator, "acme"));

        assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            keys.authenticate(Some("Bearer x")),
            Err(AuthError::Malformed)
        );
        let mut wrong = k.secret.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(keys.authenticate(Some(&wrong)), Err(AuthError::Invalid));
        let unknown = format!("aios_000000000000_{}", &k.secret[18..]);
        assert_eq!(keys.authenticate(Some(&unknown)), Err(AuthError::Invalid));

        // Rotation: both work during the overlap; with no overlap the old one expires now.
        let r = keys.rotate(&k.info.id, Some("acme"), 60_000).await.unwrap();
        assert!(keys.authenticate(Some(&k.secret)).is_ok());
        assert!(keys.authenticate(Some(&r.secret)).is_ok());
        let r2 = keys.rotate(&r.info.id, Some("acme"), 0).await.unwrap();
        assert!(matches!(
            keys.authenticate(Some(&r.secret)),
            Err(AuthError::Expired(_))
        ));
        assert!(keys.rotate(&r2.info.id, Some("other"), 0).await.is_err());
        // A rotated key is not rotated again (its replacement is), and the replacement keeps
        // the original expiry, not the overlap window.
        let again = keys.rotate(&k.info.id, Some("acme"), 0).await.unwrap_err();
        assert!(again.to_string().contains("already rotated"), "{again}");
        assert_eq!(r2.info.expires_ms, None);
        let expired = keys.rotate(&r.info.id, Some("acme"), 0).await.unwrap_err();
        assert!(expired.to_string().contains("already rotated"), "{expired}");

        keys.revoke(&r2.info.id, None).await.unwrap();
        assert!(matches!(
            keys.authenticate(Some(&r2.secret)),
            Err(AuthError::Revoked(_))
        ));

        // Kept across a reopen, secrets nowhere in the records.
        let again = KeyStore::open(keys.records.clone()).await.unwrap();
        assert!(again.authenticate(Some(&k.secret)).is_ok());
        assert!(matches!(
            again.authenticate(Some(&r2.secret)),
            Err(AuthError::Revoked(_))
        ));
        assert_eq!(again.list(Some("acme")).len(), 3);
        assert!(again.list(Some("nobody")).is_empty());
    }

    #[tokio::test]
    async fn bad_input_is_refused() {
        let keys = store().await;
        assert!(keys.create("x", Role::Admin, "Acme", None).await.is_err());
        assert!(
            keys.create("x", Role::Admin, "acme", Some(1))
                .await
                .is_err()
        );
        assert!(keys.import_admin("aios_nothex_x").await.is_err());
    }
}
