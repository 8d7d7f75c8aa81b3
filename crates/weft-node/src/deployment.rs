//! The app as it runs: the deployed functions and the route table. A
//! deploy (`deploy.rs`) builds a new [`Deployment`] and swaps it in.

use std::collections::HashMap;
use std::sync::Arc;

use weft_manifest::{Manifest, RouteTable};
use weft_runtime::FunctionImage;
use weft_store::Digest;

/// One function as deployed.
pub struct Deployed {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    /// The settings that, with the digest, make the version.
    pub config: String,
    pub spec: weft_manifest::Function,
    pub image: Arc<FunctionImage>,
}

/// The app as deployed: its functions and its routes.
#[derive(Default)]
pub struct Deployment {
    pub app: String,
    pub functions: HashMap<String, Arc<Deployed>>,
    pub routes: RouteTable<weft_manifest::Target>,
    pub manifest: Option<Manifest>,
}
