//! D1 as the core's `Database`: a batch is one D1 `batch()`, which D1 runs as a transaction.

use serde_json::{Map, Value};
use worker::wasm_bindgen::JsValue;
use worker::D1Database;

use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement, StatementOutcome};

pub struct D1(pub D1Database);

impl Database for D1 {
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<StatementOutcome>, DatabaseError> {
        let error = |err: worker::Error| DatabaseError(err.to_string());
        let prepared = statements
            .iter()
            .map(|statement| {
                let params: Vec<JsValue> = statement.params.iter().map(to_js).collect();
                self.0.prepare(statement.sql).bind(&params)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        let results = self.0.batch(prepared).await.map_err(error)?;
        results
            .iter()
            .map(|result| {
                let rows = result.results::<Map<String, Value>>().map_err(error)?;
                let changes = result.meta().map_err(error)?.and_then(|meta| meta.changes).unwrap_or(0);
                Ok(StatementOutcome {
                    rows: rows.into_iter().map(to_row).collect(),
                    changes: u64::try_from(changes).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }
}

fn to_js(value: &SqlValue) -> JsValue {
    match value {
        SqlValue::Null => JsValue::NULL,
        // Timestamps and counters fit a double exactly; INTEGER columns store them as integers.
        SqlValue::Integer(value) => JsValue::from_f64(*value as f64),
        SqlValue::Text(value) => JsValue::from_str(value),
    }
}

fn to_row(columns: Map<String, Value>) -> Row {
    columns
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Null => SqlValue::Null,
                Value::String(text) => SqlValue::Text(text),
                Value::Number(number) => match number.as_i64() {
                    Some(integer) => SqlValue::Integer(integer),
                    // JavaScript hands integers over as doubles.
                    None => SqlValue::Integer(number.as_f64().unwrap_or_default() as i64),
                },
                Value::Bool(flag) => SqlValue::Integer(i64::from(flag)),
                other => SqlValue::Text(other.to_string()),
            };
            (name, value)
        })
        .collect()
}
