//! Lua values ↔ JSON values, under the rules in the crate docs.
//!
//! Written out rather than left to mlua's serde support so that the rules
//! are ours: Neovim's `vim.NIL` is null, sparse and mixed tables are refused
//! with the path of the offending table, and every array that comes back
//! carries the array metatable (`polis.is_array`).

use mlua::{LightUserData, Lua, Table, Value};
use serde_json::{Map, Number, Value as Json};

/// Where the array metatable is kept in the Lua registry.
const ARRAY_MT_KEY: &str = "polis.array_mt";

/// Deeper nesting than this is refused (it is most likely a cycle).
const MAX_DEPTH: usize = 100;

/// What the mapping needs from the Lua state: its null and array marker.
pub(crate) struct Mapping {
    /// `vim.NIL` inside Neovim, else mlua's NULL light userdata.
    pub(crate) null: Value,
    /// Marks a table as a JSON array.
    pub(crate) array_mt: Table,
    /// The NULL light userdata, null too where `null` is `vim.NIL`.
    light_null: Value,
}

impl Mapping {
    /// Makes the array metatable; once, when the module loads.
    pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
        let array_mt = lua.create_table()?;
        array_mt.set("__name", "polis.array")?;
        // What getmetatable() shows instead of the table, so that
        // vim.inspect prints arrays plainly; polis.is_array() looks behind it.
        array_mt.set("__metatable", "polis.array")?;
        lua.set_named_registry_value(ARRAY_MT_KEY, array_mt)
    }

    pub(crate) fn new(lua: &Lua) -> mlua::Result<Self> {
        let light_null = Value::LightUserData(LightUserData(std::ptr::null_mut()));
        let vim_nil = match lua.globals().raw_get::<Value>("vim") {
            Ok(Value::Table(vim)) => vim.raw_get::<Value>("NIL").ok(),
            _ => None,
        };
        let null = match vim_nil {
            Some(nil @ (Value::UserData(_) | Value::LightUserData(_))) => nil,
            _ => light_null.clone(),
        };
        Ok(Self { null, array_mt: lua.named_registry_value(ARRAY_MT_KEY)?, light_null })
    }

    /// A Lua value as JSON; the error says what cannot be sent and where.
    pub(crate) fn to_json(&self, value: &Value) -> Result<Json, String> {
        self.value_to_json(value, "args", 0)
    }

    fn value_to_json(&self, value: &Value, path: &str, depth: usize) -> Result<Json, String> {
        let refuse = |what: &str| Err(format!("{path} is {what}, which JSON cannot carry"));
        Ok(match value {
            Value::Nil => Json::Null,
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) => Json::from(*i),
            Value::Number(n) => match Number::from_f64(*n) {
                Some(n) => Json::Number(n),
                None => return refuse(&format!("the number {n}")),
            },
            Value::String(s) => match s.to_str() {
                Ok(s) => Json::String(s.to_owned()),
                Err(_) => return refuse("a string that is not UTF-8"),
            },
            Value::Table(table) => self.table_to_json(table, path, depth)?,
            v if *v == self.null || *v == self.light_null => Json::Null,
            other => return refuse(&format!("a {}", other.type_name())),
        })
    }

    fn table_to_json(&self, table: &Table, path: &str, depth: usize) -> Result<Json, String> {
        if depth >= MAX_DEPTH {
            return Err(format!(
                "args nest tables more than {MAX_DEPTH} deep (a table that contains itself?)"
            ));
        }
        if table.metatable().is_some_and(|mt| mt == self.array_mt) {
            let mut items = Vec::with_capacity(table.raw_len());
            for i in 1..=table.raw_len() {
                let item = table.raw_get::<Value>(i).map_err(|e| e.to_string())?;
                items.push(self.value_to_json(&item, &format!("{path}[{i}]"), depth + 1)?);
            }
            return Ok(Json::Array(items));
        }
        let mut object = Map::new();
        let mut indexed = Vec::new();
        for pair in table.pairs::<Value, Value>() {
            let (key, value) = pair.map_err(|e| e.to_string())?;
            match key {
                Value::String(key) => {
                    let Ok(key) = key.to_str() else {
                        return Err(format!("{path} has a key that is not UTF-8"));
                    };
                    let json = self.value_to_json(&value, &format!("{path}.{}", &*key), depth + 1)?;
                    object.insert(key.to_owned(), json);
                }
                Value::Integer(i) if i >= 1 => indexed.push((i as usize, value)),
                other => {
                    return Err(format!(
                        "{path} has a key of type {}; JSON objects take string keys, arrays 1..n",
                        other.type_name()
                    ));
                }
            }
        }
        match (object.is_empty(), indexed.is_empty()) {
            (_, true) => Ok(Json::Object(object)),
            (true, false) => {
                indexed.sort_unstable_by_key(|(i, _)| *i);
                if indexed.last().is_some_and(|(last, _)| *last != indexed.len()) {
                    return Err(format!("{path} is a sparse array; put polis.null in the holes"));
                }
                let items =
                    indexed.iter().map(|(i, v)| self.value_to_json(v, &format!("{path}[{i}]"), depth + 1));
                Ok(Json::Array(items.collect::<Result<_, _>>()?))
            }
            (false, false) => Err(format!("{path} mixes array items and object keys")),
        }
    }

    /// A JSON value as Lua: null is [`Mapping::null`], arrays carry
    /// [`Mapping::array_mt`].
    pub(crate) fn to_lua(&self, lua: &Lua, json: &Json) -> mlua::Result<Value> {
        Ok(match json {
            Json::Null => self.null.clone(),
            Json::Bool(b) => Value::Boolean(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::String(lua.create_string(s)?),
            Json::Array(items) => {
                let table = lua.create_table_with_capacity(items.len(), 0)?;
                for (i, item) in items.iter().enumerate() {
                    table.raw_set(i + 1, self.to_lua(lua, item)?)?;
                }
                table.set_metatable(Some(self.array_mt.clone()))?;
                Value::Table(table)
            }
            Json::Object(fields) => {
                let table = lua.create_table_with_capacity(0, fields.len())?;
                for (key, value) in fields {
                    table.raw_set(key.as_str(), self.to_lua(lua, value)?)?;
                }
                Value::Table(table)
            }
        })
    }
}
