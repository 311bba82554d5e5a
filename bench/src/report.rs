//! The table `nexmark` and `kafka` print, streaming beside batch, and the
//! check that both runs found the same rows.

use anyhow::{Result, bail};
use datafusion::arrow::array::RecordBatch;

use crate::{Args, compare, measure};

/// The heading of the streaming-beside-batch table.
pub(crate) fn print_header() {
    println!(
        "{:<4} {:>14} {:>10} {:>10} {:>14} {:>10} {:>10} {:>8} {:>10} {:>10}",
        "q",
        "stream ev/s/c",
        "wall s",
        "peak MiB",
        "batch ev/s/c",
        "wall s",
        "peak MiB",
        "ratio",
        "rows",
        "ratio+gen"
    );
}

/// One query's line: both runs' rates over `events` inputs.
pub(crate) fn print_row(name: &str, events: u64, stream: &measure::Run, batch: &measure::Run) {
    let s = stream.events_per_core_second(events);
    let b = batch.events_per_core_second(events);
    // Beside the batch that also generates its events, as the stream does.
    let with_input = batch
        .events_per_core_second_with_input(events)
        .map_or("-".to_string(), |g| format!("{:.3}", s / g));
    println!(
        "{:<4} {:>14.0} {:>10.2} {:>10.1} {:>14.0} {:>10.2} {:>10.1} {:>8.3} {:>10} {:>10}",
        name,
        s,
        stream.usage.wall.as_secs_f64(),
        stream.peak_bytes as f64 / (1 << 20) as f64,
        b,
        batch.usage.wall.as_secs_f64(),
        batch.peak_bytes as f64 / (1 << 20) as f64,
        s / b,
        stream.result_rows,
        with_input
    );
}

/// Fails unless the view has as many rows as the batch answer and, with
/// `--check`, the same rows.
pub(crate) fn check_rows(
    name: &str,
    args: &Args,
    stream: &measure::Run,
    view_rows: &[RecordBatch],
    batch: &measure::Run,
    batch_rows: &[RecordBatch],
) -> Result<()> {
    if args.check {
        let types: Vec<_> = view_rows
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect()
            })
            .unwrap_or_default();
        if !types.is_empty() || !batch_rows.iter().all(|b| b.num_rows() == 0) {
            let view = compare::sorted_rows(view_rows, &types)?;
            let expected = compare::sorted_rows(batch_rows, &types)?;
            compare::same_rows(name, &view, &expected)?;
        }
    }
    if stream.result_rows != batch.result_rows {
        bail!(
            "{name}: the view has {} rows, the batch query {}",
            stream.result_rows,
            batch.result_rows
        );
    }
    Ok(())
}
