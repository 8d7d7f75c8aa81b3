//! Key-value stores: `wasi:keyvalue` (0.2.0-draft2: `store`, `atomics`,
//! `batch`) and Spin's `fermyon:spin/key-value@2.0.0`, both over the same
//! stores, so components built against either run unchanged.
//!
//! - Policy: [`Stores`], which the embedder implements: it opens a store
//!   by name (or says why not), and a [`Store`] runs its operations.
//! - State: [`State`], the invocation's policy and a stream to its log.
//! - Linker hook: [`add_to_linker`].
//!
//! Opening a store the function may not use answers `access-denied` (the
//! interfaces' variant carries no text), and the policy's reason, which
//! says what grant to add, goes to the function's log as a line from weft.
//!
//! This module does not know what a grant is, nor where values are kept.

use std::sync::Arc;

use futures_util::StreamExt;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::OutputStream;

use super::Host;
use crate::invoke::InvocationContext;
use crate::logs::CaptureStream;

mod bindings {
    wasmtime::component::bindgen!({
    inline: "
        package weft:host;

        world stores {
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
            import wasi:keyvalue/batch@0.2.0-draft2;
            import fermyon:spin/key-value@2.0.0;
        }
    ",
    path: ["wit/keyvalue", "wit/spin"],
    world: "weft:host/stores",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": crate::host::keyvalue::Bucket,
        "wasi:keyvalue/atomics.cas": crate::host::keyvalue::Cas,
        "fermyon:spin/key-value.store": crate::host::keyvalue::Bucket,
    },
    });
}

use bindings::fermyon::spin::key_value as spin;
use bindings::wasi::keyvalue::{atomics, batch, store};

/// Why a store operation failed. Guests see `access-denied`,
/// `no-such-store`, or `other` with the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The function may not use the store; the text says what to grant.
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    NoSuchStore(String),
    /// The operation cannot be done as asked: a limit, an empty key, a
    /// value that is not a number. Trying again changes nothing.
    #[error("{0}")]
    Invalid(String),
    /// The storage cannot take it now; trying again later may.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

/// Opens the stores a function's calls name.
pub trait Stores: Send + Sync + 'static {
    /// The store `name`, or why the function cannot open it.
    fn open(&self, name: &str) -> Result<Arc<dyn Store>, StoreError>;
}

/// One store's operations, as a function may run them.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Answers once the value is durable.
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// A page of keys, in order, after `cursor` (a key); with the cursor of
    /// the next page, if there may be one.
    async fn keys(&self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), StoreError>;
    /// The value and its revision, for a compare-and-swap.
    async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError>;
    /// Sets the value only if the key is still at `revision` (none: still
    /// absent); false if it moved on.
    async fn swap(&self, key: &str, value: Vec<u8>, revision: Option<u64>) -> Result<bool, StoreError>;
    /// Adds `delta` to the number the key holds (none counts as 0).
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
}

/// Compare-and-swap handles one invocation may hold open at once (each
/// keeps the value it read).
pub const MAX_CAS: usize = 64;
/// Keys one `get-many`, `set-many` or `delete-many` may name.
pub const MAX_BATCH: usize = 100;
/// Bytes of values one `get-many` may read.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Keys Spin's `get-keys`, which answers them all at once, may answer.
pub const MAX_SPIN_KEYS: usize = 10_000;
/// Writes of one `set-many` or `delete-many` running at once.
const BATCH_WRITES: usize = 16;

fn too_many(what: &str, n: usize, most: usize) -> StoreError {
    StoreError::Invalid(format!("{what} names {n} keys; at most {most} may be named at once"))
}

/// An open store: a `wasi:keyvalue` bucket or a Spin store.
pub struct Bucket {
    store: Arc<dyn Store>,
}

/// A compare-and-swap handle: the key and what it held when read.
pub struct Cas {
    store: Arc<dyn Store>,
    key: String,
    value: Option<Vec<u8>>,
    revision: Option<u64>,
}

/// The key-value state of one invocation.
pub(crate) struct State {
    stores: Arc<dyn Stores>,
    log: CaptureStream,
    /// Compare-and-swap handles open now.
    cas: usize,
}

impl State {
    pub(crate) fn new(ctx: &InvocationContext, log: CaptureStream) -> State {
        State {
            stores: ctx.stores.clone(),
            log,
            cas: 0,
        }
    }
}

/// What the key-value host traits see of a [`Host`].
pub(crate) struct View<'a> {
    state: &'a mut State,
    table: &'a mut ResourceTable,
}

struct HasView;

impl HasData for HasView {
    type Data<'a> = View<'a>;
}

fn view(host: &mut Host) -> View<'_> {
    View {
        state: &mut host.kv,
        table: &mut host.table,
    }
}

/// Adds `wasi:keyvalue` and `fermyon:spin/key-value` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    store::add_to_linker::<Host, HasView>(linker, view)?;
    atomics::add_to_linker::<Host, HasView>(linker, view)?;
    batch::add_to_linker::<Host, HasView>(linker, view)?;
    spin::add_to_linker::<Host, HasView>(linker, view)?;
    Ok(())
}

fn wasi_error(e: StoreError) -> store::Error {
    match e {
        StoreError::AccessDenied(_) => store::Error::AccessDenied,
        StoreError::NoSuchStore(_) => store::Error::NoSuchStore,
        other => store::Error::Other(other.to_string()),
    }
}

fn spin_error(e: StoreError) -> spin::Error {
    match e {
        StoreError::AccessDenied(_) => spin::Error::AccessDenied,
        StoreError::NoSuchStore(_) => spin::Error::NoSuchStore,
        other => spin::Error::Other(other.to_string()),
    }
}

impl View<'_> {
    /// Opens `name`; a refusal's reason goes to the function's log.
    fn open(&mut self, name: &str) -> wasmtime::Result<Result<Resource<Bucket>, StoreError>> {
        match self.state.stores.open(name) {
            Ok(store) => Ok(Ok(self.table.push(Bucket { store })?)),
            Err(e) => {
                let line = format!("weft: cannot open store `{name}`: {e}\n");
                let _ = self.state.log.write(bytes::Bytes::from(line));
                Ok(Err(e))
            }
        }
    }

    fn store(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Arc<dyn Store>> {
        Ok(self.table.get(bucket)?.store.clone())
    }
}

impl store::Host for View<'_> {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        Ok(View::open(self, &identifier)?.map_err(wasi_error))
    }
}

impl store::HostBucket for View<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.get(&key).await.map_err(wasi_error))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.set(&key, value).await.map_err(wasi_error))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.delete(&key).await.map_err(wasi_error))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, store::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.exists(&key).await.map_err(wasi_error))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let store = self.store(&bucket)?;
        Ok(store
            .keys(cursor.as_deref())
            .await
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(wasi_error))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for View<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, store::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.increment(&key, delta).await.map_err(wasi_error))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas {
            store, key, revision, ..
        } = self.table.delete(cas)?;
        self.state.cas -= 1;
        match store.swap(&key, value, revision).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // Lost: a fresh handle on what the key holds now.
                let read = match store.read(&key).await {
                    Ok(read) => read,
                    Err(e) => return Ok(Err(atomics::CasError::StoreError(wasi_error(e)))),
                };
                let (value, revision) = read.map_or((None, None), |(v, r)| (Some(v), Some(r)));
                let fresh = self.table.push(Cas {
                    store,
                    key,
                    value,
                    revision,
                })?;
                self.state.cas += 1;
                Ok(Err(atomics::CasError::CasFailed(fresh)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_error(e)))),
        }
    }
}

impl atomics::HostCas for View<'_> {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, store::Error>> {
        if self.state.cas >= MAX_CAS {
            return Ok(Err(wasi_error(StoreError::Invalid(format!(
                "{MAX_CAS} compare-and-swap handles are open; drop or swap some before making more"
            )))));
        }
        let store = self.store(&bucket)?;
        let read = match store.read(&key).await {
            Ok(read) => read,
            Err(e) => return Ok(Err(wasi_error(e))),
        };
        let (value, revision) = read.map_or((None, None), |(v, r)| (Some(v), Some(r)));
        let cas = self.table.push(Cas {
            store,
            key,
            value,
            revision,
        })?;
        self.state.cas += 1;
        Ok(Ok(cas))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.value.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        self.state.cas -= 1;
        Ok(())
    }
}

impl batch::Host for View<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        if keys.len() > MAX_BATCH {
            return Ok(Err(wasi_error(too_many("get-many", keys.len(), MAX_BATCH))));
        }
        let store = self.store(&bucket)?;
        let mut out = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for key in keys {
            match store.get(&key).await {
                Ok(value) => {
                    bytes += value.as_ref().map_or(0, Vec::len);
                    if bytes > MAX_BATCH_BYTES {
                        return Ok(Err(wasi_error(StoreError::Invalid(format!(
                            "get-many would read more than {MAX_BATCH_BYTES} bytes; ask for fewer keys at once"
                        )))));
                    }
                    out.push((key, value));
                }
                Err(e) => return Ok(Err(wasi_error(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        if key_values.len() > MAX_BATCH {
            return Ok(Err(wasi_error(too_many("set-many", key_values.len(), MAX_BATCH))));
        }
        let store = self.store(&bucket)?;
        // Several at once, so that they can share commits.
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(key_values)
            .map(|(k, v)| {
                let store = store.clone();
                async move { store.set(&k, v).await }
            })
            .buffer_unordered(BATCH_WRITES)
            .collect()
            .await;
        Ok(results.into_iter().collect::<Result<(), _>>().map_err(wasi_error))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        if keys.len() > MAX_BATCH {
            return Ok(Err(wasi_error(too_many("delete-many", keys.len(), MAX_BATCH))));
        }
        let store = self.store(&bucket)?;
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(keys)
            .map(|k| {
                let store = store.clone();
                async move { store.delete(&k).await }
            })
            .buffer_unordered(BATCH_WRITES)
            .collect()
            .await;
        Ok(results.into_iter().collect::<Result<(), _>>().map_err(wasi_error))
    }
}

impl spin::Host for View<'_> {}

impl spin::HostStore for View<'_> {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<Bucket>, spin::Error>> {
        Ok(View::open(self, &label)?.map_err(spin_error))
    }

    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.get(&key).await.map_err(spin_error))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.set(&key, value).await.map_err(spin_error))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), spin::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.delete(&key).await.map_err(spin_error))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, spin::Error>> {
        let store = self.store(&bucket)?;
        Ok(store.exists(&key).await.map_err(spin_error))
    }

    async fn get_keys(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<Result<Vec<String>, spin::Error>> {
        let store = self.store(&bucket)?;
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            match store.keys(cursor.as_deref()).await {
                Ok((keys, next)) => {
                    all.extend(keys);
                    if all.len() > MAX_SPIN_KEYS {
                        return Ok(Err(spin_error(StoreError::Invalid(format!(
                            "the store holds more than {MAX_SPIN_KEYS} keys, more than get-keys answers at once; \
                             list them a page at a time with wasi:keyvalue's list-keys"
                        )))));
                    }
                    match next {
                        Some(next) => cursor = Some(next),
                        None => return Ok(Ok(all)),
                    }
                }
                Err(e) => return Ok(Err(spin_error(e))),
            }
        }
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
