//! CEL over the execution's data. Every expression sees the same variables — `event`, `input`,
//! `steps` (`steps.<id>.output`), `vars`, and where they apply `item`/`index` (foreach bodies)
//! and `error` (error handlers) — unset ones are `null`, so a filter that names `event` also
//! evaluates on a manual run. Programs are compiled per evaluation: parsing is microseconds and
//! the interpreter's programs are not `Send`, so they cannot be cached across worker tasks.
use cel_interpreter::{Context, Program, Value as CelValue};
use serde_json::{Map, Value};

/// Variables an expression may name.
pub const VARIABLES: [&str; 7] = ["event", "input", "steps", "vars", "item", "index", "error"];

/// Checks that `source` parses and names only known variables.
pub fn check(source: &str) -> Result<(), String> {
    let program = compile(source)?;
    let refs = program.references();
    let mut unknown: Vec<&str> = refs
        .variables()
        .into_iter()
        .filter(|v| !VARIABLES.contains(v))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unknown variable {} (known: {})",
            unknown.join(", "),
            VARIABLES.join(", ")
        ))
    }
}

/// Evaluates `source` with the variables of `scope` (a JSON object) and returns JSON.
pub fn eval(source: &str, scope: &Value) -> Result<Value, String> {
    let program = compile(source)?;
    let mut ctx = Context::default();
    for name in VARIABLES {
        let value = scope.get(name).cloned().unwrap_or(Value::Null);
        let cel = cel_interpreter::to_value(Signed(&value)).map_err(|e| e.to_string())?;
        ctx.add_variable_from_value(name, cel);
    }
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx)))
        .map_err(|_| "the expression could not be evaluated".to_owned())?
        .map_err(|e| e.to_string())?;
    to_json(&out)
}

/// Parses `source`. The interpreter's generated parser panics on some malformed input
/// (e.g. `vars.(`) instead of returning an error; that is caught and reported as a parse error
/// so a bad expression can never take a worker or a request down.
fn compile(source: &str) -> Result<Program, String> {
    match std::panic::catch_unwind(|| Program::compile(source)) {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("syntax error".to_owned()),
    }
}

/// JSON as CEL sees it: integers are `int` (serde_json would hand positive ones over as
/// `uint`, and CEL refuses `uint * int`), other numbers `double`.
struct Signed<'a>(&'a Value);

impl serde::Serialize for Signed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => s.serialize_i64(i),
                (None, Some(u)) => s.serialize_u64(u),
                _ => s.serialize_f64(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(&Signed(i))?;
                }
                seq.end()
            }
            Value::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, &Signed(v))?;
                }
                map.end()
            }
        }
    }
}

fn to_json(value: &CelValue) -> Result<Value, String> {
    match value {
        // Timestamps and durations go out as RFC 3339 / proto3 JSON strings, as port inputs expect.
        CelValue::Timestamp(t) => Ok(Value::String(t.to_rfc3339())),
        CelValue::Duration(d) => Ok(Value::String(format!(
            "{}s",
            d.num_milliseconds() as f64 / 1000.0
        ))),
        other => other.json().map_err(|e| format!("{e:?}")),
    }
}

/// Evaluates a condition; anything but a boolean is an error (no truthiness).
pub fn eval_bool(source: &str, scope: &Value) -> Result<bool, String> {
    match eval(source, scope)? {
        Value::Bool(b) => Ok(b),
        other => Err(format!(
            "must evaluate to a bool, got {}",
            type_name(&other)
        )),
    }
}

/// Evaluates a foreach list.
pub fn eval_list(source: &str, scope: &Value) -> Result<Vec<Value>, String> {
    match eval(source, scope)? {
        Value::Array(items) => Ok(items),
        other => Err(format!(
            "must evaluate to a list, got {}",
            type_name(&other)
        )),
    }
}

/// Builds a JSON object from a mapping: string leaves are CEL, objects nest, other literals
/// are copied. An error names the key path that failed (e.g. `to` or `address.city`).
pub fn eval_mapping(
    mapping: &Map<String, Value>,
    scope: &Value,
) -> Result<Value, (String, String)> {
    let mut out = Map::new();
    for (key, value) in mapping {
        let v = match value {
            Value::String(src) => eval(src, scope).map_err(|e| (key.clone(), e))?,
            Value::Object(inner) => {
                eval_mapping(inner, scope).map_err(|(p, e)| (format!("{key}.{p}"), e))?
            }
            other => other.clone(),
        };
        out.insert(key.clone(), v);
    }
    Ok(Value::Object(out))
}

/// Every CEL expression of a mapping with its key path, for validation.
pub fn mapping_expressions(
    mapping: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    for (key, value) in mapping {
        let path = format!("{prefix}.{key}");
        match value {
            Value::String(src) => out.push((path, src.clone())),
            Value::Object(inner) => mapping_expressions(inner, &path, out),
            _ => {}
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_the_scope_and_reports_errors() {
        let scope = json!({"input": {"n": 3, "name": "Ada"}, "vars": {"k": [1, 2]}});
        assert_eq!(eval("input.n * 2", &scope).unwrap(), json!(6));
        assert_eq!(eval("'hi ' + input.name", &scope).unwrap(), json!("hi Ada"));
        assert!(eval_bool("size(vars.k) == 2", &scope).unwrap());
        assert_eq!(
            eval_list("vars.k", &scope).unwrap(),
            vec![json!(1), json!(2)]
        );
        assert!(eval_bool("input.n", &scope).is_err());
        assert!(eval("input.missing.deeper", &scope).is_err());
        assert!(check("input.n +").is_err());
        assert!(check("secret.x").unwrap_err().contains("secret"));
        assert!(check("event.data.x == 1 && steps.a.output.ok").is_ok());
    }
}
