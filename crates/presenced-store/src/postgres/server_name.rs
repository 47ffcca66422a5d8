//! The PostgreSQL side of `server_name.rs`: what a database says about
//! its server, read before anything is written, and the first open's
//! record (made under the advisory lock by the opens that take it).

use ruma_common::ServerName;
use tokio_postgres::GenericClient;

use super::connect::{error_chain, PgOpenError};
use super::PgConnectOptions;
use crate::server_name::{Evidence, Verdict};

/// Reads the evidence; works on a database of any schema version, and on
/// an empty one.
async fn evidence<C: GenericClient>(
    client: &C,
    configured: &ServerName,
) -> Result<Evidence, tokio_postgres::Error> {
    let has = |table: &'static str| async move {
        client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map(|r| r.get::<_, bool>(0))
    };
    if has("presenced_server_name").await? {
        let recorded = client
            .query_opt("SELECT server_name FROM presenced_server_name", &[])
            .await?;
        if let Some(row) = recorded {
            return Ok(Evidence::Recorded(row.get(0)));
        }
    }
    if !has("users").await? {
        return Ok(Evidence::Nothing);
    }
    // The text after the first `:` is the server part (a localpart has
    // none); compared exactly, as IDs are.
    let foreign = client
        .query_opt(
            "SELECT user_id FROM users \
             WHERE substr(user_id, strpos(user_id, ':') + 1) <> $1 ORDER BY user_id LIMIT 1",
            &[&configured.as_str()],
        )
        .await?;
    Ok(foreign.map_or(Evidence::Nothing, |r| Evidence::ForeignUser(r.get(0))))
}

/// Judges the database without writing to it.
pub(crate) async fn check<C: GenericClient>(
    client: &C,
    configured: &ServerName,
    opts: &PgConnectOptions,
) -> Result<Verdict, PgOpenError> {
    let found = evidence(client, configured)
        .await
        .map_err(|e| PgOpenError::Other {
            target: opts.describe(),
            reason: error_chain(&e),
        })?;
    found
        .judge(configured)
        .map_err(|mismatch| PgOpenError::ServerName {
            target: opts.describe(),
            mismatch,
        })
}

/// After the migrations: judges again and records the configured name if
/// none is, in one transaction (`ON CONFLICT DO NOTHING` and a second
/// look, for a command opening beside a server without the lock).
pub(crate) async fn record(
    client: &mut tokio_postgres::Client,
    configured: &ServerName,
    opts: &PgConnectOptions,
) -> Result<(), PgOpenError> {
    let other = |e: tokio_postgres::Error| PgOpenError::Other {
        target: opts.describe(),
        reason: error_chain(&e),
    };
    let tx = client.transaction().await.map_err(other)?;
    if check(&tx, configured, opts).await? == Verdict::Matches {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO presenced_server_name (one, server_name) VALUES (TRUE, $1) \
         ON CONFLICT (one) DO NOTHING",
        &[&configured.as_str()],
    )
    .await
    .map_err(other)?;
    // Another command may have recorded a name meanwhile: judged again.
    check(&tx, configured, opts).await?;
    tx.commit().await.map_err(other)?;
    tracing::info!(server_name = %configured, "recorded the database's server_name");
    Ok(())
}
