//! `query {sql}`: read-only SQL on the index, as Norgberg's execute-query.
//!
//! Each query gets its own connection, opened read-only, with ATTACH
//! forbidden, and a progress handler that interrupts it at its time limit.
//! A statement that would write is refused before it runs.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use polis_sdk::ModuleError;
use rusqlite::{ErrorCode, limits::Limit, types::ValueRef};
use serde_json::{Value, json};

/// SQLite virtual-machine steps between two looks at the clock.
const STEPS_PER_CHECK: i32 = 1000;

/// Runs `sql` on the index at `index`, handing `send` the column names
/// first (`{"columns": [...]}`), then each row as an array. `send`
/// returning false (the caller went away) stops the query.
pub(crate) fn run(
    index: &Path,
    sql: &str,
    limit: Duration,
    mut send: impl FnMut(Value) -> bool,
) -> Result<u64, ModuleError> {
    let mut conn = crate::db::open_read_only(index)
        .map_err(|e| ModuleError::unavailable(format!("cannot open the index: {e}")))?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0).map_err(|e| ModuleError::internal(e.to_string()))?;
    let deadline = Instant::now() + limit;
    conn.progress_handler(STEPS_PER_CHECK, Some(move || Instant::now() > deadline))
        .map_err(|e| ModuleError::internal(e.to_string()))?;
    let fail = |e: rusqlite::Error| error(e, limit);
    let mut stmt = conn.prepare(sql).map_err(fail)?;
    if !stmt.readonly() {
        return Err(ModuleError::invalid_argument(
            "query: only statements that read are allowed (this one writes)",
        ));
    }
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    if !send(json!({ "columns": columns })) {
        return Ok(0);
    }
    let mut rows = stmt.query([]).map_err(fail)?;
    let mut count = 0;
    while let Some(row) = rows.next().map_err(fail)? {
        let values: Vec<Value> = (0..columns.len())
            .map(|i| match row.get_ref(i) {
                Ok(ValueRef::Null) | Err(_) => Value::Null,
                Ok(ValueRef::Integer(n)) => json!(n),
                Ok(ValueRef::Real(x)) => json!(x),
                Ok(ValueRef::Text(t)) => json!(String::from_utf8_lossy(t)),
                Ok(ValueRef::Blob(b)) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            })
            .collect();
        count += 1;
        if !send(Value::Array(values)) {
            break;
        }
    }
    Ok(count)
}

fn error(e: rusqlite::Error, limit: Duration) -> ModuleError {
    match e.sqlite_error_code() {
        Some(ErrorCode::OperationInterrupted) => ModuleError::deadline_exceeded(format!(
            "query: interrupted at its time limit of {} ms (timeout_ms)",
            limit.as_millis()
        )),
        Some(ErrorCode::ReadOnly) => {
            ModuleError::invalid_argument(format!("query: the index is read-only here ({e})"))
        }
        _ => match e {
            rusqlite::Error::MultipleStatement => {
                ModuleError::invalid_argument("query: one statement at a time")
            }
            e => ModuleError::invalid_argument(format!("query: {e}")),
        },
    }
}
