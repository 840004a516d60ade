//! `aiosctl keys`.

use clap::Subcommand;
use serde_json::json;

use crate::api::{Api, listing, show};

#[derive(Subcommand, Debug)]
pub(crate) enum Keys {
    /// List your tenant's keys.
    List,
    /// Create a key (its secret is printed once).
    Create {
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Another tenant (operator-tenant admins only).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Rotate a key: a new secret; the old one works for the overlap.
    Rotate {
        id: String,
        /// Overlap, e.g. `1h`, `30m`, `0s`.
        #[arg(long, default_value = "24h")]
        overlap: humantime::Duration,
    },
    /// Revoke a key now.
    Revoke { id: String },
}

/// Runs a `keys` command.
pub(crate) async fn run(api: &Api, k: Keys, json_out: bool) -> anyhow::Result<()> {
    match k {
        Keys::List => {
            let v = api.get("/v1/keys").await?;
            listing(
                &v,
                json_out,
                &[
                    ("ID", "/id"),
                    ("NAME", "/name"),
                    ("ROLE", "/role"),
                    ("TENANT", "/tenant"),
                    ("EXPIRES", "/expires_ms"),
                    ("REVOKED", "/revoked_ms"),
                ],
            )?;
        }
        Keys::Create { role, name, tenant } => {
            let mut body = json!({"role": role, "name": name});
            if let Some(t) = tenant {
                body["tenant"] = json!(t);
            }
            let v = api.post("/v1/keys", body).await?;
            if json_out {
                show(&v)?;
            } else {
                println!(
                    "key {} ({} of {}); secret, shown once:",
                    v["key"]["id"], v["key"]["role"], v["key"]["tenant"]
                );
                println!("{}", v["secret"].as_str().unwrap_or_default());
            }
        }
        Keys::Rotate { id, overlap } => {
            let ms = u64::try_from(overlap.as_millis()).unwrap_or(u64::MAX);
            let v = api
                .post(&format!("/v1/keys/{id}/rotate"), json!({"overlap_ms": ms}))
                .await?;
            if json_out {
                show(&v)?;
            } else {
                println!("new key {}; secret, shown once:", v["key"]["id"]);
                println!("{}", v["secret"].as_str().unwrap_or_default());
            }
        }
        Keys::Revoke { id } => {
            api.call(reqwest::Method::DELETE, &format!("/v1/keys/{id}"), None)
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
