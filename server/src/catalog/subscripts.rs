//! `runnel_subscripts(array, dim)`: the subscripts of an array's dimension
//! as a list, which the planner unnests for `generate_subscripts(array,
//! dim)` in a select list (SQLAlchemy's index reflection pairs it with
//! `unnest(indkey)`). Arrays here are one-dimensional, so dimension 1 gives
//! `1 … length` and any other none.
//!
//! `runnel_expandarray(array)`: the elements with their positions, a list
//! of `{x, n}` structs, for `information_schema._pg_expandarray` (pgjdbc's
//! primary key and index metadata).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array, ListArray, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::cast::as_int64_array;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use runnel_planner::set_returning::{EXPAND_ARRAY_FUNCTION, SUBSCRIPTS_FUNCTION};

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

/// `runnel_expandarray`, ready to register.
pub fn expand_array_function() -> ScalarUDF {
    ScalarUDF::new_from_impl(ExpandArray {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArray {
    signature: Signature,
}

fn element_struct(item: &DataType) -> DataType {
    DataType::Struct(
        vec![
            Field::new("x", item.clone(), true),
            Field::new("n", DataType::Int32, false),
        ]
        .into(),
    )
}

impl ScalarUDFImpl for ExpandArray {
    fn name(&self) -> &str {
        EXPAND_ARRAY_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(DataType::List(item)) => Ok(DataType::List(Arc::new(Field::new_list_field(
                element_struct(item.data_type()),
                true,
            )))),
            other => Err(DataFusionError::Plan(format!(
                "_pg_expandarray needs an array, not {other:?}"
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let lists = arrays
            .first()
            .ok_or_else(|| DataFusionError::Plan("_pg_expandarray needs an array".into()))?
            .as_list::<i32>();
        let DataType::List(item) = lists.data_type() else {
            return Err(DataFusionError::Plan(
                "_pg_expandarray needs an array".into(),
            ));
        };
        let lengths: Vec<usize> = (0..lists.len())
            .map(|row| {
                if lists.is_null(row) {
                    0
                } else {
                    lists.value_length(row) as usize
                }
            })
            .collect();
        let positions: Int32Array = lengths
            .iter()
            .flat_map(|&n| (1..=n as i32).map(Some))
            .collect();
        let mut values = Vec::with_capacity(lists.len());
        for row in 0..lists.len() {
            if !lists.is_null(row) {
                values.push(lists.value(row));
            }
        }
        let values: Vec<&dyn Array> = values.iter().map(|a| a.as_ref()).collect();
        let elements = if values.is_empty() {
            datafusion::arrow::array::new_empty_array(item.data_type())
        } else {
            datafusion::arrow::compute::concat(&values)?
        };
        let DataType::Struct(fields) = element_struct(item.data_type()) else {
            return Err(DataFusionError::Internal("element type".into()));
        };
        let structs = StructArray::try_new(fields, vec![elements, Arc::new(positions)], None)?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(
                element_struct(item.data_type()),
                true,
            )),
            OffsetBuffer::from_lengths(lengths),
            Arc::new(structs),
            lists.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}
