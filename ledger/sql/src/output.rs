//! An answer as JSON or as an Arrow IPC stream.

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value, json};

use crate::engine::Answer;
use crate::error::SqlError;

/// The IPC schema metadata key holding the snapshot's height.
pub const META_HEIGHT: &str = "pyralog.height";
/// The IPC schema metadata key holding the snapshot's state root (hex).
pub const META_STATE_ROOT: &str = "pyralog.state_root";

impl Answer {
    /// The answer as one JSON document:
    /// `{height, state_root, columns: [{name, type}], rows: [[...], ...], rows_read,
    /// rows_cached}`.
    /// Rows are arrays in column order (names may repeat in a join). Integers
    /// are JSON numbers (exact up to u64), binary values are hex strings, and
    /// types JSON has no form for are shown as Arrow displays them.
    pub fn to_json(&self) -> Result<Value, SqlError> {
        let columns: Vec<Value> = self
            .schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        let mut rows = Vec::with_capacity(self.num_rows());
        for batch in &self.batches {
            let cols: Vec<Vec<Value>> = batch
                .columns()
                .iter()
                .map(column_values)
                .collect::<Result<_, _>>()?;
            for r in 0..batch.num_rows() {
                rows.push(Value::Array(
                    cols.iter()
                        .map(|c| c.get(r).cloned().unwrap_or(Value::Null))
                        .collect(),
                ));
            }
        }
        let mut out = Map::new();
        out.insert("height".into(), json!(self.height));
        out.insert("state_root".into(), json!(self.state_root.to_hex()));
        out.insert("columns".into(), Value::Array(columns));
        out.insert("rows".into(), Value::Array(rows));
        out.insert("rows_read".into(), json!(self.rows_read));
        out.insert("rows_cached".into(), json!(self.rows_cached));
        Ok(Value::Object(out))
    }

    /// The answer as an Arrow IPC stream; the schema's metadata carries the
    /// snapshot's height ([`META_HEIGHT`]) and state root ([`META_STATE_ROOT`]).
    pub fn to_arrow_ipc(&self) -> Result<Vec<u8>, SqlError> {
        let enc = |e: datafusion::arrow::error::ArrowError| SqlError::Encode(e.to_string());
        let mut meta = self.schema.metadata().clone();
        meta.insert(META_HEIGHT.into(), self.height.to_string());
        meta.insert(META_STATE_ROOT.into(), self.state_root.to_hex());
        let schema = std::sync::Arc::new(Schema::new_with_metadata(
            self.schema.fields().clone(),
            meta,
        ));
        let mut w = StreamWriter::try_new(Vec::new(), &schema).map_err(enc)?;
        for b in &self.batches {
            w.write(&b.clone().with_schema(schema.clone()).map_err(enc)?)
                .map_err(enc)?;
        }
        w.finish().map_err(enc)?;
        w.into_inner().map_err(enc)
    }
}

fn column_values(a: &ArrayRef) -> Result<Vec<Value>, SqlError> {
    let enc = |e: datafusion::arrow::error::ArrowError| SqlError::Encode(e.to_string());
    let nulls = |a: &dyn Array, f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..a.len())
            .map(|i| if a.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    let dt = a.data_type();
    Ok(match dt {
        DataType::Null => vec![Value::Null; a.len()],
        DataType::Boolean => {
            let b = downcast::<BooleanArray>(a)?;
            nulls(b, &|i| Value::Bool(b.value(i)))
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let c = cast(a, &DataType::Int64).map_err(enc)?;
            let v = downcast::<Int64Array>(&c)?;
            nulls(v, &|i| json!(v.value(i)))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let c = cast(a, &DataType::UInt64).map_err(enc)?;
            let v = downcast::<UInt64Array>(&c)?;
            nulls(v, &|i| json!(v.value(i)))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let c = cast(a, &DataType::Float64).map_err(enc)?;
            let v = downcast::<Float64Array>(&c)?;
            // NaN and infinities have no JSON number: shown as text.
            nulls(v, &|i| {
                serde_json::Number::from_f64(v.value(i))
                    .map_or_else(|| Value::String(v.value(i).to_string()), Value::Number)
            })
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let c = cast(a, &DataType::Utf8).map_err(enc)?;
            let v = downcast::<StringArray>(&c)?;
            nulls(v, &|i| Value::String(v.value(i).to_owned()))
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let c = cast(a, &DataType::Binary).map_err(enc)?;
            let v = downcast::<BinaryArray>(&c)?;
            nulls(v, &|i| Value::String(hex::encode(v.value(i))))
        }
        _ => {
            let f = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default()).map_err(enc)?;
            nulls(a.as_ref(), &|i| Value::String(f.value(i).to_string()))
        }
    })
}

fn downcast<T: 'static>(a: &ArrayRef) -> Result<&T, SqlError> {
    a.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| SqlError::Encode(format!("unexpected array for {}", a.data_type())))
}
