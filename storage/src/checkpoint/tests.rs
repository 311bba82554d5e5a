use std::time::Duration;

use super::*;
use crate::StoreOptions;

const TIMEOUT: Duration = Duration::from_secs(60);

fn put(store: &Store, from: u32, to: u32) {
    let mut writes = WriteSet::new();
    for i in from..to {
        writes.put_meta(format!("key{i:06}").as_bytes(), &[7u8; 200]);
    }
    store.write(writes).unwrap();
}

fn keys(store: &Store) -> usize {
    store.meta_scan(b"key").unwrap().len()
}

fn checkpointer(
    store: &Store,
    location: &CheckpointLocation,
    staging: &std::path::Path,
) -> Checkpointer {
    Checkpointer::new(
        location.clone(),
        staging.to_path_buf(),
        lineage(store).unwrap(),
        2,
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn checkpoints_upload_incrementally_and_restore() {
    let data = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let location = CheckpointLocation::open(&url, &S3Options::default()).unwrap();
    let store = Store::open(&data.path().join("store"), &StoreOptions::default()).unwrap();
    let staging = data.path().join("staging");
    let checkpoints = checkpointer(&store, &location, &staging);

    put(&store, 0, 5000);
    let first = checkpoints
        .upload(checkpoints.snapshot(&store, 1).unwrap(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(first.id, 1);
    assert_eq!(first.uploaded_bytes, first.total_bytes());

    put(&store, 5000, 5100);
    let second = checkpoints
        .upload(checkpoints.snapshot(&store, 2).unwrap(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(second.id, 2);
    // The first checkpoint's table file is referenced, not sent again.
    let shared = |m: &Manifest| -> Vec<String> {
        m.files
            .iter()
            .filter(|f| f.name.ends_with(".sst"))
            .map(|f| f.object.clone())
            .collect()
    };
    assert!(shared(&first).iter().all(|o| shared(&second).contains(o)));
    assert!(second.uploaded_bytes < second.total_bytes() / 2);

    // Only two are retained.
    put(&store, 5100, 5200);
    checkpoints
        .upload(checkpoints.snapshot(&store, 3).unwrap(), TIMEOUT)
        .await
        .unwrap();
    let listing = manifest::list(&location).await.unwrap();
    assert_eq!(
        listing.checkpoints.keys().copied().collect::<Vec<_>>(),
        vec![2, 3]
    );
    let history = checkpoints.history();
    assert_eq!(history.len(), 3);
    assert!(
        history
            .iter()
            .all(|i| i.status == CheckpointStatus::Completed)
    );
    assert_eq!(checkpoints.counts().completed, 3);

    let restored_dir = tempfile::tempdir().unwrap();
    let dest = restored_dir.path().join("store");
    let manifest = restore_latest(&location, &dest).await.unwrap().unwrap();
    assert_eq!((manifest.id, manifest.epoch), (3, 3));
    let restored = Store::open(&dest, &StoreOptions::default()).unwrap();
    assert_eq!(keys(&restored), 5200);
}

#[tokio::test]
async fn a_damaged_latest_checkpoint_falls_back_to_the_one_before() {
    let data = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let location = CheckpointLocation::open(&url, &S3Options::default()).unwrap();
    let store = Store::open(&data.path().join("store"), &StoreOptions::default()).unwrap();
    let checkpoints = checkpointer(&store, &location, &data.path().join("staging"));
    put(&store, 0, 100);
    checkpoints
        .upload(checkpoints.snapshot(&store, 1).unwrap(), TIMEOUT)
        .await
        .unwrap();
    put(&store, 100, 200);
    let latest = checkpoints
        .upload(checkpoints.snapshot(&store, 2).unwrap(), TIMEOUT)
        .await
        .unwrap();
    // Damage a file only the latest checkpoint has.
    let own = latest
        .files
        .iter()
        .find(|f| f.object.starts_with("chk-2/"))
        .unwrap();
    std::fs::write(remote.path().join(&own.object), b"garbage").unwrap();

    let dest = tempfile::tempdir().unwrap();
    let manifest = restore_latest(&location, &dest.path().join("store"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest.id, 1);
    let restored = Store::open(&dest.path().join("store"), &StoreOptions::default()).unwrap();
    assert_eq!(keys(&restored), 100);
}

#[tokio::test]
async fn an_unwritable_location_fails_the_checkpoint_and_the_next_retries() {
    let data = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    // A file where the location's directory should be.
    let blocked = remote.path().join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let url = format!("file://{}", blocked.display());
    let location = CheckpointLocation::open(&url, &S3Options::default()).unwrap();
    let store = Store::open(&data.path().join("store"), &StoreOptions::default()).unwrap();
    let checkpoints = checkpointer(&store, &location, &data.path().join("staging"));
    put(&store, 0, 10);
    let error = checkpoints
        .upload(checkpoints.snapshot(&store, 1).unwrap(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("blocked"), "{error}");
    assert_eq!(checkpoints.counts().failed, 1);
    assert_eq!(checkpoints.history()[0].status, CheckpointStatus::Failed);
    // The staged snapshot is gone either way.
    assert_eq!(
        std::fs::read_dir(data.path().join("staging"))
            .unwrap()
            .count(),
        0
    );

    std::fs::remove_file(&blocked).unwrap();
    checkpoints
        .upload(checkpoints.snapshot(&store, 2).unwrap(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(checkpoints.counts().completed, 1);
}
