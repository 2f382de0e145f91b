mod common;

use popgate_store::conformance::{self, Capabilities};
use store_s3::S3Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_passes_the_conformance_kit() {
    let s3 = common::S3Server::start().await;
    let mut config = s3.config();
    // Two keys a page: every listing of the kit's mailboxes takes several.
    config.list_page_size = 2;
    let store = S3Store::new(config).expect("valid config");
    conformance::run(&store, "tenant-x", Capabilities { fencing: true }).await;
}
