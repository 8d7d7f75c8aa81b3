//! In-process measurements of the runtime alone.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use weft_runtime::{
    Answer, HttpError, InvocationContext, Limits, Outbound, OutboundFuture, RequestOptions, Runtime, RuntimeConfig,
    WasiBody,
};

struct NoOutbound;

impl Outbound for NoOutbound {
    fn send(&self, _request: http::Request<WasiBody>, _options: Option<RequestOptions>) -> OutboundFuture {
        Box::pin(async { Err(HttpError::HttpRequestDenied) })
    }
}

/// Invokes the component `n` times, one after another, and reports the
/// time to create each instance and the whole invocation.
pub async fn instantiation(component: &Path, n: usize) -> anyhow::Result<String> {
    let bytes = std::fs::read(component)?;
    let cache = std::env::temp_dir().join(format!("weft-bench-cache-{}", std::process::id()));
    let runtime = Runtime::new(RuntimeConfig::new(cache.clone()))?;
    let digest: String = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let limits = Limits {
        memory: 128 << 20,
        timeout: std::time::Duration::from_secs(10),
    };
    let image = Arc::new(runtime.prepare(&digest, &bytes, limits, Vec::new())?);
    let outbound: Arc<dyn Outbound> = Arc::new(NoOutbound);
    let (mut instantiate, mut total) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let request = http::Request::get("/").header(http::header::HOST, "bench").body(
            Full::new(Bytes::new())
                .map_err(|never: std::convert::Infallible| -> HttpError { match never {} })
                .boxed_unsync(),
        )?;
        let ctx = InvocationContext {
            request_id: format!("bench-{i}"),
            outbound: outbound.clone(),
            stores: Arc::new(NoStores),
            nested: false,
            on_complete: None,
        };
        let started = Instant::now();
        let invocation = runtime.invoke(image.clone(), request, ctx).await;
        if let Answer::Response(r) = invocation.answer {
            r.into_body().collect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let completion = invocation.completion.await?;
        total.push(started.elapsed().as_secs_f64() * 1e6);
        instantiate.push(completion.instantiate.as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_dir_all(cache);
    let p = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    };
    Ok(format!(
        "{n} invocations of the hello component, one after another, no HTTP server:\n\n\
         - instantiation per request: p50 **{:.1} µs**, p99 {:.1} µs\n\
         - whole invocation (store, instance, handler, response body, completion): p50 {:.1} µs, p99 {:.1} µs",
        p(&mut instantiate, 0.5),
        p(&mut instantiate, 0.99),
        p(&mut total, 0.5),
        p(&mut total, 0.99)
    ))
}

/// Opens no stores: this program grants none.
struct NoStores;

impl weft_runtime::Stores for NoStores {
    fn open(&self, name: &str) -> Result<Arc<dyn weft_runtime::Store>, weft_runtime::StoreError> {
        Err(weft_runtime::StoreError::NoSuchStore(format!(
            "no store `{name}` exists here"
        )))
    }
}
