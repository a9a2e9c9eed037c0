//! D1 as the core's `Database`: a batch is one D1 `batch()`, which D1 runs as a transaction.
//! Statements go to JavaScript and rows come back as one JSON string each way (`glue.js`,
//! `d1Batch`): converting rows value by value through the JavaScript boundary cost more CPU
//! than the rest of a refresh grant. For the benchmark's latency run, a batch can be made to
//! wait a fixed time before it is sent (`BENCH_D1_DELAY_MS`): a timer in JavaScript, so that
//! batches a flow runs at once still wait at once, as their round trips overlap.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, SerializeStruct, Serializer};
use serde_json::Value;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::Env;

use crate::ports::{Database, DatabaseError, Row, SqlValue, Statement, StatementOutcome};

/// The D1 binding, as the JavaScript object it is (only `glue.js` calls it), and the
/// milliseconds each batch waits before it is sent (0 but in the latency run).
pub struct D1 {
    binding: JsValue,
    delay_ms: u32,
}

impl D1 {
    /// The binding `name` of `env`: one property read, where `Env::d1` also checks the
    /// object's constructor name with four more calls into JavaScript, on every request.
    /// Something else under that name fails at its first batch (`d1Batch` throws: a
    /// `server_error`, with the JavaScript error in the log).
    pub fn binding(env: &Env, name: &str) -> Result<D1, String> {
        let binding = worker::js_sys::Reflect::get(env, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
        if binding.is_undefined() || binding.is_null() {
            return Err(format!("D1 binding {name} is missing"));
        }
        Ok(D1 { binding, delay_ms: 0 })
    }

    /// The same binding, each batch waiting `delay_ms` before it is sent: a database that far
    /// away (`Config::bench_d1_delay_ms`, only ever set for the benchmark).
    pub fn delayed(self, delay_ms: u32) -> D1 {
        D1 { delay_ms, ..self }
    }
}

impl Database for D1 {
    async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<StatementOutcome>, DatabaseError> {
        let request = serde_json::to_string(&Batch(&statements))
            .map_err(|err| DatabaseError(format!("the batch could not be written: {err}")))?;
        let response = super::glue::d1_batch(&self.binding, &request, self.delay_ms).await.map_err(|err| {
            let message = err.dyn_ref::<worker::js_sys::Error>().map(|err| String::from(err.message()));
            DatabaseError(message.or_else(|| err.as_string()).unwrap_or_else(|| format!("{err:?}")))
        })?;
        let response = response.as_string().ok_or_else(|| DatabaseError("D1 answered no JSON".to_owned()))?;
        let outcomes: Vec<(Vec<RowOf>, u64)> = serde_json::from_str(&response)
            .map_err(|err| DatabaseError(format!("D1's answer could not be read: {err}")))?;
        Ok(outcomes
            .into_iter()
            .map(|(rows, changes)| StatementOutcome { rows: rows.into_iter().map(|RowOf(row)| row).collect(), changes })
            .collect())
    }
}

/// A batch as `glue.js` takes it, `[{"sql": …, "params": […]}, …]`, written straight from the
/// statements (no `serde_json::Value` in between: this runs for every batch).
struct Batch<'a>(&'a [Statement]);

impl Serialize for Batch<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut batch = serializer.serialize_seq(Some(self.0.len()))?;
        for statement in self.0 {
            batch.serialize_element(&StatementOf(statement))?;
        }
        batch.end()
    }
}

struct StatementOf<'a>(&'a Statement);

impl Serialize for StatementOf<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut statement = serializer.serialize_struct("Statement", 2)?;
        statement.serialize_field("sql", self.0.sql)?;
        statement.serialize_field("params", &Params(&self.0.params))?;
        statement.end()
    }
}

struct Params<'a>(&'a [SqlValue]);

impl Serialize for Params<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut params = serializer.serialize_seq(Some(self.0.len()))?;
        for value in self.0 {
            match value {
                SqlValue::Null => params.serialize_element(&())?,
                // Timestamps and counters fit a double exactly; INTEGER columns store them as
                // integers.
                SqlValue::Integer(value) => params.serialize_element(value)?,
                SqlValue::Text(value) => params.serialize_element(value.as_str())?,
            }
        }
        params.end()
    }
}

/// A row as D1 hands it over (an object of column values), read straight into a `Row`: no
/// `Map` per row on the way.
struct RowOf(Row);

impl<'de> Deserialize<'de> for RowOf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Columns;
        impl<'de> Visitor<'de> for Columns {
            type Value = RowOf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowOf, A::Error> {
                let mut row = Row::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    row.insert(name, to_sql_value(value));
                }
                Ok(RowOf(row))
            }
        }
        deserializer.deserialize_map(Columns)
    }
}

fn to_sql_value(value: Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::String(text) => SqlValue::Text(text),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => SqlValue::Integer(integer),
            // JavaScript hands integers over as doubles.
            None => SqlValue::Integer(number.as_f64().unwrap_or_default() as i64),
        },
        Value::Bool(flag) => SqlValue::Integer(i64::from(flag)),
        other => SqlValue::Text(other.to_string()),
    }
}
