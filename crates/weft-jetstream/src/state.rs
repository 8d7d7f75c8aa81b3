//! Key-value and object buckets: JetStream's own, one per weft bucket,
//! named by [`crate::names`]. Keys and object names are encoded the same
//! way, so any string weft uses is a valid key.

use async_nats::jetstream::{kv, object_store, stream};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use weft_store::durable::{Entry, KeyValue, Objects, Result, StorageError};

use crate::JetStream;
use crate::names::{decode, encode};

/// Longest value a key may hold (NATS's default largest message).
pub const MAX_VALUE: usize = 1024 * 1024;

fn key(k: &str) -> Result<String> {
    if k.is_empty() {
        return Err(StorageError::Other("a key cannot be empty".into()));
    }
    Ok(encode(k))
}

impl JetStream {
    async fn bucket(&self, bucket: &str) -> Result<kv::Store> {
        if let Some(b) = self.kv.read().unwrap_or_else(|p| p.into_inner()).get(bucket) {
            return Ok(b.clone());
        }
        self.check_connected()?;
        let name = self.names.kv_bucket(bucket);
        // The bucket's stream is made here in the layout of NATS's
        // key-value buckets (the client's own maker needs a 2.10 server).
        self.js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{name}"),
                description: Some(format!("weft bucket {bucket}")),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_message_size: MAX_VALUE as i32,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(&format!("cannot make bucket {name}"), e))?;
        let store = self
            .js
            .get_key_value(&name)
            .await
            .map_err(|e| self.error(&format!("cannot open bucket {name}"), e))?;
        self.kv
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    async fn object_bucket(&self, bucket: &str) -> Result<object_store::ObjectStore> {
        if let Some(b) = self.objects.read().unwrap_or_else(|p| p.into_inner()).get(bucket) {
            return Ok(b.clone());
        }
        self.check_connected()?;
        let name = self.names.object_bucket(bucket);
        let store = match self.js.get_object_store(&name).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: name.clone(),
                    description: Some(format!("weft objects {bucket}")),
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| self.error(&format!("cannot open object bucket {name}"), e))?,
        };
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    /// The revision `k` is at now, for a conflict's answer.
    async fn current(&self, store: &kv::Store, k: &str) -> Option<u64> {
        match store.entry(k).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => Some(e.revision),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl KeyValue for JetStream {
    async fn get(&self, bucket: &str, k: &str) -> Result<Option<Entry>> {
        let store = self.bucket(bucket).await?;
        match store.entry(key(k)?).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(Some(Entry {
                value: e.value.to_vec(),
                revision: e.revision,
            })),
            Ok(_) => Ok(None),
            Err(e) => Err(self.error("cannot read the key", e)),
        }
    }

    async fn put(&self, bucket: &str, k: &str, value: Vec<u8>) -> Result<u64> {
        let store = self.bucket(bucket).await?;
        self.check_connected()?;
        store
            .put(key(k)?, value.into())
            .await
            .map_err(|e| self.error("cannot set the key", e))
    }

    async fn create(&self, bucket: &str, k: &str, value: Vec<u8>) -> Result<u64> {
        let store = self.bucket(bucket).await?;
        self.check_connected()?;
        let k = key(k)?;
        match store.create(&k, value.into()).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(StorageError::Conflict {
                current: self.current(&store, &k).await,
            }),
            Err(e) => Err(self.error("cannot create the key", e)),
        }
    }

    async fn update(&self, bucket: &str, k: &str, value: Vec<u8>, revision: u64) -> Result<u64> {
        let store = self.bucket(bucket).await?;
        self.check_connected()?;
        let k = key(k)?;
        match store.update(&k, value.into(), revision).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(StorageError::Conflict {
                current: self.current(&store, &k).await,
            }),
            Err(e) => Err(self.error("cannot update the key", e)),
        }
    }

    async fn delete(&self, bucket: &str, k: &str) -> Result<bool> {
        let store = self.bucket(bucket).await?;
        let k = key(k)?;
        let Some(revision) = self.current(&store, &k).await else {
            return Ok(false);
        };
        self.check_connected()?;
        match store.delete_expect_revision(&k, Some(revision)).await {
            Ok(()) => Ok(true),
            // Changed or deleted meanwhile: deleted if it is gone now.
            Err(_) if self.current(&store, &k).await.is_none() => Ok(false),
            Err(e) => Err(self.error("cannot delete the key", e)),
        }
    }

    async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let store = self.bucket(bucket).await?;
        let encoded = encode(prefix);
        let mut keys = store.keys().await.map_err(|e| self.error("cannot list keys", e))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| self.error("cannot list keys", e))?;
            if k.starts_with(&encoded)
                && let Some(name) = decode(&k)
            {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Objects for JetStream {
    async fn put_object(&self, bucket: &str, name: &str, data: Vec<u8>) -> Result<()> {
        let store = self.object_bucket(bucket).await?;
        self.check_connected()?;
        store
            .put(key(name)?.as_str(), &mut data.as_slice())
            .await
            .map(|_| ())
            .map_err(|e| self.error("cannot store the object", e))
    }

    async fn get_object(&self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let store = self.object_bucket(bucket).await?;
        let mut object = match store.get(key(name)?).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error("cannot read the object", e)),
        };
        let mut data = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut data)
            .await
            .map_err(|e| self.error("cannot read the object", e))?;
        Ok(Some(data))
    }

    async fn delete_object(&self, bucket: &str, name: &str) -> Result<bool> {
        let store = self.object_bucket(bucket).await?;
        self.check_connected()?;
        match store.delete(key(name)?).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("cannot delete the object", e)),
        }
    }

    async fn list_objects(&self, bucket: &str) -> Result<Vec<String>> {
        let store = self.object_bucket(bucket).await?;
        let mut list = store.list().await.map_err(|e| self.error("cannot list objects", e))?;
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| self.error("cannot list objects", e))?;
            if !info.deleted
                && let Some(name) = decode(&info.name)
            {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}
