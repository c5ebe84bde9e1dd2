//! Savepoints: a part of a transaction that can be undone, locks taken in
//! it included, while the rest of the transaction goes on.

use tokio_postgres::Transaction;

use crate::error::{Error, Result};

/// A savepoint set in a transaction. It ends by [`Savepoint::release`]
/// (keeping what was done since) or [`Savepoint::roll_back`] (undoing it);
/// dropped, it stays set until the transaction ends.
#[must_use = "a savepoint is released or rolled back"]
pub(crate) struct Savepoint<'a, 't> {
    tx: &'a Transaction<'t>,
    name: &'static str,
}

impl<'a, 't> Savepoint<'a, 't> {
    /// Sets the savepoint `name` in `tx`.
    pub(crate) async fn set(tx: &'a Transaction<'t>, name: &'static str) -> Result<Self> {
        tx.batch_execute(&format!("SAVEPOINT {name}"))
            .await
            .map_err(|e| Error::server("SAVEPOINT", e))?;
        Ok(Self { tx, name })
    }

    /// Keeps what was done since the savepoint was set.
    pub(crate) async fn release(self) -> Result<()> {
        self.tx
            .batch_execute(&format!("RELEASE SAVEPOINT {}", self.name))
            .await
            .map_err(|e| Error::server("RELEASE SAVEPOINT", e))
    }

    /// Undoes what was done since the savepoint was set, and the locks
    /// taken since, and ends it.
    pub(crate) async fn roll_back(self) -> Result<()> {
        let name = self.name;
        self.tx
            .batch_execute(&format!(
                "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
            ))
            .await
            .map_err(|e| Error::server("ROLLBACK TO SAVEPOINT", e))
    }

    /// Ends the savepoint after `outcome`, the work done in it: released
    /// when it succeeded; rolled back when it failed, the failure then
    /// returned as `Ok(Err(_))` for the caller to go on another way. A
    /// canceled statement or a lost connection is an `Err`: the
    /// transaction cannot go on.
    pub(crate) async fn end<T>(self, outcome: Result<T>) -> Result<std::result::Result<T, Error>> {
        match outcome {
            Ok(value) => {
                self.release().await?;
                Ok(Ok(value))
            }
            Err(e) if e.is_canceled_or_lost() => Err(e),
            Err(e) => match self.roll_back().await {
                Ok(()) => Ok(Err(e)),
                // The work's failure says more than the rollback's.
                Err(_) => Err(e),
            },
        }
    }
}
