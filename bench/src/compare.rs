//! Comparing a view's rows with its batch query's, as multisets of text
//! rows: each batch column is cast to the view's column type first (a view
//! stores some types widened), and floating point values are compared to
//! twelve significant digits (a streaming average sums in another order).

use anyhow::{Result, bail};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::util::display::array_value_to_string;

/// Every row of `batches` as text, columns cast to `types`, sorted.
pub fn sorted_rows(batches: &[RecordBatch], types: &[DataType]) -> Result<Vec<String>> {
    let mut rows = vec![];
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .zip(types)
            .map(|(c, t)| cast(c, t))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells = columns
                .iter()
                .map(|c| {
                    if c.is_null(row) {
                        return Ok("NULL".to_string());
                    }
                    if matches!(c.data_type(), DataType::Float32 | DataType::Float64) {
                        let c = cast(c, &DataType::Float64)?;
                        return Ok(format!(
                            "{:.11e}",
                            c.as_primitive::<Float64Type>().value(row)
                        ));
                    }
                    Ok(array_value_to_string(c, row)?)
                })
                .collect::<Result<Vec<_>>>()?;
            rows.push(cells.join(" | "));
        }
    }
    rows.sort();
    Ok(rows)
}

/// Fails naming the first differences when the two sorted row lists differ.
pub fn same_rows(query: &str, view: &[String], batch: &[String]) -> Result<()> {
    if view == batch {
        return Ok(());
    }
    let missing: Vec<&String> = batch.iter().filter(|r| !view.contains(r)).take(5).collect();
    let extra: Vec<&String> = view.iter().filter(|r| !batch.contains(r)).take(5).collect();
    bail!(
        "{query}: the view has {} rows, the batch query {}; missing from the view: {missing:?}; extra in the view: {extra:?}",
        view.len(),
        batch.len()
    )
}
