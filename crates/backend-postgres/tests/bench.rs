//! Measurements, not assertions: run with
//! `cargo test -p backend-postgres --release --test bench -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use popgate_store::{MailStore, MailboxId, MessageStream};
use tokio::io::AsyncReadExt;

fn stream(bytes: Vec<u8>) -> MessageStream {
    Box::pin(std::io::Cursor::new(bytes))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it on purpose"]
async fn open_50k_messages() {
    let mut db = TestDb::new("bench").await;
    db.config.statement_timeout = Duration::from_secs(600);
    let store = db.store();
    let mb = MailboxId::new("acme", "bulk", "acme.example");
    // A neighbour mailbox, so the index has to pick.
    let started = Instant::now();
    for (login, n) in [
        ("bulk@acme.example", 50_000),
        ("other@acme.example", 20_000),
    ] {
        sqlx::query(
            "SELECT popgate_deliver('acme', $1, convert_to(repeat('Subject: x' || chr(10) || chr(10) || 'body line' || chr(10), 40), 'UTF8')) \
             FROM generate_series(1, $2)",
        )
        .bind(login)
        .bind(n)
        .execute(store.pool())
        .await
        .unwrap();
    }
    println!(
        "SQL popgate_deliver: 70,000 messages of 1 KB in {:?}",
        started.elapsed()
    );
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();

    let mut times = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let drop = store.open(&mb).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(drop.messages().len(), 50_000);
    }
    println!(
        "open of 50,000 messages: median {:?}, min {:?}, max {:?} (11 runs)",
        median(times.clone()),
        times.iter().min().unwrap(),
        times.iter().max().unwrap()
    );

    // Delivery through the store (what `popgate deliver` does).
    let n = 2_000;
    let t = Instant::now();
    for i in 0..n {
        let msg = format!("Subject: {i}\n\n{}", "body line\n".repeat(200)).into_bytes();
        store.append(&mb, stream(msg)).await.unwrap();
    }
    let el = t.elapsed();
    println!(
        "append: {n} messages of 2 KB in {el:?} ({:.0} messages/s, one at a time)",
        n as f64 / el.as_secs_f64()
    );

    // One 50 MB message in and out.
    let big: Vec<u8> = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n"
        .repeat(50 * 1024 * 1024 / 73)
        .into_bytes();
    let len = big.len();
    let t = Instant::now();
    store.append(&mb, stream(big)).await.unwrap();
    let el = t.elapsed();
    println!(
        "append of one {} MB message: {el:?} ({:.0} MB/s)",
        len >> 20,
        len as f64 / 1e6 / el.as_secs_f64()
    );
    let drop = store.open(&mb).await.unwrap();
    let last = drop.messages().len() - 1;
    let t = Instant::now();
    let mut s = drop.fetch(last).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        total += k;
    }
    let el = t.elapsed();
    assert_eq!(total, len);
    println!(
        "fetch of the {} MB message: {el:?} ({:.0} MB/s)",
        len >> 20,
        len as f64 / 1e6 / el.as_secs_f64()
    );
    db.drop_schema().await;
}
