//! D1 as the core's `Database`: a batch is one D1 `batch()`, which D1 runs as a transaction.
//! Statements go to JavaScript and rows come back as one JSON string each way (`glue.js`,
//! `d1Batch`): converting rows value by value through the JavaScript boundary cost more CPU
//! than the rest of a refresh grant.

use serde_json::{Map, Value};
use worker::wasm_bindgen::JsCast;
use worker::D1Database;

use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement, StatementOutcome};

pub struct D1(pub D1Database);

impl Database for D1 {
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<StatementOutcome>, DatabaseError> {
        let request: Vec<Value> = statements
            .iter()
            .map(|statement| {
                let params: Vec<Value> = statement.params.iter().map(to_json).collect();
                serde_json::json!({ "sql": statement.sql, "params": params })
            })
            .collect();
        let request = Value::Array(request).to_string();
        let response = super::glue::d1_batch(self.0.unchecked_ref(), &request).await.map_err(|err| {
            let message = err.dyn_ref::<worker::js_sys::Error>().map(|err| String::from(err.message()));
            DatabaseError(message.or_else(|| err.as_string()).unwrap_or_else(|| format!("{err:?}")))
        })?;
        let response = response.as_string().ok_or_else(|| DatabaseError("D1 answered no JSON".to_owned()))?;
        let outcomes: Vec<(Vec<Map<String, Value>>, u64)> = serde_json::from_str(&response)
            .map_err(|err| DatabaseError(format!("D1's answer could not be read: {err}")))?;
        Ok(outcomes
            .into_iter()
            .map(|(rows, changes)| StatementOutcome { rows: rows.into_iter().map(to_row).collect(), changes })
            .collect())
    }
}

fn to_json(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        // Timestamps and counters fit a double exactly; INTEGER columns store them as integers.
        SqlValue::Integer(value) => Value::from(*value),
        SqlValue::Text(value) => Value::from(value.as_str()),
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
