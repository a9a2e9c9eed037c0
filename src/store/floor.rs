//! The benchmark's D1 floor through edgeid's own adapter (`GET /__bench/d1`, only with
//! `BENCH_ENDPOINTS=true`): the same statements as the floor Worker of `bench/serve.mjs`, on
//! the same tables `floor` and `floor_rows`, which `bench/serve.mjs` creates in the benchmark's
//! database. No migration creates them: nothing of edgeid's reads or writes them.

use crate::ports::{Database, DatabaseError, SqlValue, Statement};

/// The row an `i` of a floor batch inserts: about the size of a session's or a token's row.
const PAYLOAD: &str = "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp";

/// One batch of the shape `shape` as the floor Worker runs `/?batches=…`: `w` an upsert of one
/// row of `floor`, `i` a new row of `floor_rows` (two indexes) named by `new_id`, `r` a read of
/// one row. Returns the number of rows read.
pub async fn floor_batch(
    db: &impl Database,
    shape: &str,
    now_ms: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Result<usize, DatabaseError> {
    let mut statements = Vec::with_capacity(shape.len());
    for (index, kind) in (0_i64..).zip(shape.bytes()) {
        statements.push(match kind {
            b'w' => Statement::new(
                "INSERT INTO floor (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                [SqlValue::Integer(index), SqlValue::Integer(now_ms)],
            ),
            b'i' => Statement::new(
                "INSERT INTO floor_rows (id, owner, created_at, expires_at, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                [
                    SqlValue::Text(new_id()),
                    SqlValue::Text(format!("u-{}", index % 7)),
                    SqlValue::Integer(now_ms),
                    SqlValue::Integer(now_ms + 86_400_000),
                    SqlValue::from(PAYLOAD),
                ],
            ),
            _ => Statement::new("SELECT v FROM floor WHERE k = ?1", [SqlValue::Integer((index - 1).max(0))]),
        });
    }
    Ok(db.batch(statements).await?.iter().map(|outcome| outcome.rows.len()).sum())
}
