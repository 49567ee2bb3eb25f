//! The member's ledger: the `pyralog_ledger::Store` that the state machine
//! applies to and everything else reads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use pyralog_ledger::{GenesisFile, Store};

use crate::error::Error;

/// A shared handle on the member's ledger store. The state machine is its
/// only writer; readers take the read lock for one read and let go (never
/// across an `.await`).
#[derive(Clone)]
pub struct Ledger {
    store: Arc<RwLock<Store>>,
    path: PathBuf,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens the store at `path`, creating it from `genesis` if absent. Its
    /// commits skip the fsync: the state machine syncs it (see
    /// [`crate::machine`]).
    pub fn open(path: &Path, genesis: &GenesisFile) -> Result<Ledger, Error> {
        let mut store = Store::open(path, genesis)?;
        store.defer_fsync(true);
        Ok(Ledger {
            store: Arc::new(RwLock::new(store)),
            path: path.to_path_buf(),
        })
    }

    /// Where the store's file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store, for reading.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, Store>, Error> {
        self.store
            .read()
            .map_err(|_| Error::Storage("the ledger lock is poisoned".into()))
    }

    pub(crate) fn write(&self) -> Result<RwLockWriteGuard<'_, Store>, Error> {
        self.store
            .write()
            .map_err(|_| Error::Storage("the ledger lock is poisoned".into()))
    }
}
