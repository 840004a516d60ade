//! The text of the store's frequent statements, built once per store.

/// The text of the frequent statements, built once per store and prepared once per
/// connection (`prepare_cached`), so a call is one round trip to the server.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) get: String,
    /// Writes arrays of keys and values (`put` and `put_many`).
    pub(super) put_many: String,
    /// `put_many` under a lease: applied only while the lease row names this process, with
    /// the epoch it was granted, unexpired.
    pub(super) put_many_leased: String,
    pub(super) remove: String,
    pub(super) remove_leased: String,
    pub(super) keys_after: String,
    /// Rewrites this node's row of `<ns>_flushes`, synchronously.
    pub(super) flush: String,
}

impl Sql {
    pub(super) fn new(snapshots: &str, leases: &str, flushes: &str) -> Self {
        Self {
            get: format!("SELECT value FROM {snapshots} WHERE key = $1"),
            put_many: format!(
                "INSERT INTO {snapshots} (key, value)
                 SELECT k, v FROM unnest($1::TEXT[], $2::BYTEA[]) AS u(k, v)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            put_many_leased: format!(
                "WITH l AS (SELECT 1 FROM {leases} WHERE key = $5 AND holder = $3
                     AND epoch = $4 AND expires_at > now() FOR SHARE)
                 INSERT INTO {snapshots} (key, value)
                 SELECT u.k, u.v FROM unnest($1::TEXT[], $2::BYTEA[]) AS u(k, v) CROSS JOIN l
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            remove: format!("DELETE FROM {snapshots} WHERE key = $1"),
            remove_leased: format!(
                "WITH l AS (SELECT 1 FROM {leases} WHERE key = $4 AND holder = $2
                     AND epoch = $3 AND expires_at > now() FOR SHARE),
                 d AS (DELETE FROM {snapshots} WHERE key = $1 AND EXISTS (SELECT 1 FROM l))
                 SELECT count(*) FROM l"
            ),
            keys_after: format!(
                "SELECT key FROM {snapshots} WHERE starts_with(key, $1)
                     AND ($2::TEXT IS NULL OR key > $2)
                 ORDER BY key LIMIT $3"
            ),
            flush: format!(
                "INSERT INTO {flushes} AS f (node, n) VALUES ($1, 1)
                 ON CONFLICT (node) DO UPDATE SET n = f.n + 1"
            ),
        }
    }
}
