//! `runnel_subscripts(array, dim)`: the subscripts of an array's dimension
//! as a list, which the planner unnests for `generate_subscripts(array,
//! dim)` in a select list (SQLAlchemy's index reflection pairs it with
//! `unnest(indkey)`). Arrays here are one-dimensional, so dimension 1 gives
//! `1 … length` and any other none.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::cast::as_int64_array;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use runnel_planner::set_returning::SUBSCRIPTS_FUNCTION;

/// The function, ready to register.
pub fn subscripts_function() -> ScalarUDF {
    ScalarUDF::new_from_impl(Subscripts {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Subscripts {
    signature: Signature,
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::Int32, true))
}

impl ScalarUDFImpl for Subscripts {
    fn name(&self) -> &str {
        SUBSCRIPTS_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(item_field()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [lists, dims] = arrays.as_slice() else {
            return Err(DataFusionError::Plan(
                "generate_subscripts takes an array and a dimension".into(),
            ));
        };
        let dims = datafusion::arrow::compute::cast(dims, &DataType::Int64)?;
        let dims = as_int64_array(&dims)?;
        let lengths: Vec<usize> = match lists.data_type() {
            DataType::List(_) => {
                let lists = lists.as_list::<i32>();
                (0..lists.len())
                    .map(|row| {
                        let wanted =
                            !lists.is_null(row) && !dims.is_null(row) && dims.value(row) == 1;
                        if wanted {
                            lists.value_length(row) as usize
                        } else {
                            0
                        }
                    })
                    .collect()
            }
            DataType::Null => vec![0; lists.len()],
            other => {
                return Err(DataFusionError::Plan(format!(
                    "generate_subscripts needs an array, not {other}"
                )));
            }
        };
        let values: Int32Array = lengths
            .iter()
            .flat_map(|&n| (1..=n as i32).map(Some))
            .collect();
        let offsets = OffsetBuffer::from_lengths(lengths);
        let list = ListArray::try_new(item_field(), offsets, Arc::new(values), None)?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}
