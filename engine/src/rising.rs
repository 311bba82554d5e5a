//! Which expressions carry a watermark through: those that never fall as
//! one input column rises, so "no row below `w` in the input column" means
//! "no row below `f(w)` in the output". Window bounds are such expressions
//! (`date_bin(size, ts)`, `date_bin(size, ts) + size`), and so are the
//! usual time buckets (`date_trunc('hour', ts)`) and shifted columns.
//!
//! A list of rising expressions (`make_array(date_bin(slide, ts),
//! date_bin(slide, ts - slide), …)`, a HOP row's window starts) rises
//! too. A watermark on a list column bounds its elements: its value has
//! the element type and is the least element the watermark's row would
//! give, so an `unnest` of the list passes it on unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::scalar::ScalarValue;

use crate::Watermark;

/// The input column `expr` rises with, if it is one of: a column; a cast of
/// a rising expression; a rising expression plus a constant or minus one;
/// `date_bin(constant, rising[, constant])`; `date_trunc(constant,
/// rising)`; `make_array` of expressions rising with the same column.
/// Anything else (including every expression of two columns) is
/// None: a watermark does not pass it.
pub fn rising_column(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    if let Some(column) = expr.downcast_ref::<Column>() {
        return Some(column.index());
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return rising_column(cast.expr());
    }
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let constant = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().is_some();
        return match binary.op() {
            Operator::Plus if constant(binary.right()) => rising_column(binary.left()),
            Operator::Plus if constant(binary.left()) => rising_column(binary.right()),
            Operator::Minus if constant(binary.right()) => rising_column(binary.left()),
            _ => None,
        };
    }
    if let Some(function) = expr.downcast_ref::<ScalarFunctionExpr>() {
        let args = function.args();
        let constant = |i: usize| {
            args.get(i)
                .is_some_and(|a| a.downcast_ref::<Literal>().is_some())
        };
        return match (function.name(), args.len()) {
            ("date_bin", 2) if constant(0) => rising_column(&args[1]),
            ("date_bin", 3) if constant(0) && constant(2) => rising_column(&args[1]),
            ("date_trunc", 2) if constant(0) => rising_column(&args[1]),
            ("make_array", n) if n > 0 => {
                let column = rising_column(&args[0])?;
                args[1..]
                    .iter()
                    .all(|a| rising_column(a) == Some(column))
                    .then_some(column)
            }
            _ => None,
        };
    }
    None
}

/// The elements of `make_array(…)`, when `expr` is one.
fn array_elements(expr: &Arc<dyn PhysicalExpr>) -> Option<&[Arc<dyn PhysicalExpr>]> {
    let function = expr.downcast_ref::<ScalarFunctionExpr>()?;
    (function.name() == "make_array").then(|| function.args())
}

/// The watermark on `expr`'s output (column `output` of the operator)
/// implied by `watermark` on its input, when `expr` rises with the
/// watermark's column. It is `expr` evaluated at the watermark's value (for
/// a list, its least element); an end-of-input watermark stays one. None
/// when the evaluation fails (a bound that overflows the type), which only
/// holds the watermark back.
pub fn derive(
    expr: &Arc<dyn PhysicalExpr>,
    output: usize,
    output_type: &DataType,
    watermark: &Watermark,
) -> Option<Watermark> {
    if rising_column(expr) != Some(watermark.column) {
        return None;
    }
    if let Some(elements) = array_elements(expr) {
        let element_type = match output_type {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                f.data_type()
            }
            _ => return None,
        };
        let mut least: Option<Watermark> = None;
        for element in elements {
            let derived = derive(element, output, element_type, watermark)?;
            if least.as_ref().is_none_or(|l| derived.value < l.value) {
                least = Some(derived);
            }
        }
        return least;
    }
    if watermark.is_end_of_input() {
        return Watermark::end_of_input(output_type).map(|value| Watermark {
            column: output,
            value,
        });
    }
    // One row: the watermark's value in its column, nulls elsewhere (the
    // expression reads no other column).
    let mut fields = vec![];
    let mut columns: Vec<ArrayRef> = vec![];
    for i in 0..=watermark.column {
        if i == watermark.column {
            let array = watermark.value.to_array().ok()?;
            fields.push(Field::new(format!("c{i}"), array.data_type().clone(), true));
            columns.push(array);
        } else {
            fields.push(Field::new(format!("c{i}"), DataType::Null, true));
            columns.push(Arc::new(NullArray::new(1)));
        }
    }
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .ok()?;
    let value = expr.evaluate(&batch).ok()?.into_array(1).ok()?;
    let value = ScalarValue::try_from_array(&value, 0).ok()?;
    (!value.is_null()).then_some(Watermark {
        column: output,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::physical_expr::expressions::lit;

    fn ts(micros: i64) -> ScalarValue {
        ScalarValue::TimestampMicrosecond(Some(micros), None)
    }

    fn column(i: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new("c", i))
    }

    #[test]
    fn shifted_columns_rise_and_differences_do_not() {
        let plus = Arc::new(BinaryExpr::new(column(2), Operator::Plus, lit(5i64))) as _;
        assert_eq!(rising_column(&plus), Some(2));
        let minus = Arc::new(BinaryExpr::new(lit(5i64), Operator::Minus, column(2))) as _;
        assert_eq!(rising_column(&minus), None);
        let both = Arc::new(BinaryExpr::new(column(1), Operator::Plus, column(2))) as _;
        assert_eq!(rising_column(&both), None);
    }

    #[test]
    fn derived_watermarks_are_the_expression_at_the_watermark() {
        let plus = Arc::new(BinaryExpr::new(column(1), Operator::Plus, lit(10i64))) as _;
        let wm = Watermark {
            column: 1,
            value: ScalarValue::Int64(Some(7)),
        };
        let derived = derive(&plus, 3, &DataType::Int64, &wm).unwrap();
        assert_eq!(
            (derived.column, derived.value),
            (3, ScalarValue::Int64(Some(17)))
        );
        assert!(derive(&plus, 3, &DataType::Int64, &Watermark { column: 0, ..wm }).is_none());

        let ts_type = DataType::Timestamp(TimeUnit::Microsecond, None);
        let end = Watermark {
            column: 0,
            value: Watermark::end_of_input(&ts_type).unwrap(),
        };
        let derived = derive(&column(0), 0, &ts_type, &end).unwrap();
        assert!(derived.is_end_of_input());
        let early = Watermark {
            column: 0,
            value: ts(1),
        };
        assert_eq!(
            derive(&column(0), 4, &ts_type, &early).unwrap().value,
            ts(1)
        );
    }

    #[test]
    fn a_list_of_rising_bounds_carries_its_least_element() {
        use datafusion::functions_nested::make_array::make_array_udf;
        let config = Arc::new(datafusion::config::ConfigOptions::default());
        let list_type = DataType::new_list(DataType::Int64, true);
        let array = |args: Vec<Arc<dyn PhysicalExpr>>| -> Arc<dyn PhysicalExpr> {
            Arc::new(ScalarFunctionExpr::new(
                "make_array",
                make_array_udf(),
                args,
                Arc::new(Field::new("l", list_type.clone(), true)),
                Arc::clone(&config),
            ))
        };
        let shifted = |by: i64| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(column(1), Operator::Minus, lit(by)))
        };
        let starts = array(vec![column(1), shifted(2), shifted(4)]);
        assert_eq!(rising_column(&starts), Some(1));
        let wm = Watermark {
            column: 1,
            value: ScalarValue::Int64(Some(10)),
        };
        let derived = derive(&starts, 2, &list_type, &wm).unwrap();
        assert_eq!(
            (derived.column, derived.value),
            (2, ScalarValue::Int64(Some(6)))
        );
        let end = Watermark {
            column: 1,
            value: Watermark::end_of_input(&DataType::Int64).unwrap(),
        };
        assert!(
            derive(&starts, 2, &list_type, &end)
                .unwrap()
                .is_end_of_input()
        );
        let mixed = array(vec![column(1), column(0)]);
        assert_eq!(rising_column(&mixed), None);
    }
}
