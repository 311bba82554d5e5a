//! Blocking work from the connectors' synchronous calls, which run on the
//! server's runtime: handed off so the runtime's other tasks keep going.

/// Runs `work`, which blocks (a broker round trip), letting a runtime
/// worker hand its other tasks on meanwhile.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Runs `work` to its end on the server's runtime from synchronous code
/// (a runtime worker included, which hands its other tasks on meanwhile so
/// the runtime's I/O keeps being driven), on a thread of its own.
pub(crate) fn run_blocking<T: Send>(
    runtime: &tokio::runtime::Handle,
    work: impl std::future::Future<Output = T> + Send,
) -> T {
    blocking(|| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}
