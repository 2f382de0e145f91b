use popgate_store::conformance::{self, Capabilities};
use store_maildir::{MaildirConfig, MaildirStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildir_store_passes_the_conformance_kit() {
    let dir =
        std::env::temp_dir().join(format!("store-maildir-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = MaildirStore::new(MaildirConfig {
        path_template: format!("{}/%d/%n/Maildir", dir.display()),
        ..MaildirConfig::default()
    })
    .expect("valid config");
    conformance::run(&store, "tenant-x", Capabilities { fencing: true }).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
