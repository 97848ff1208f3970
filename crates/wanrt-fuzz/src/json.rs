//! JSON-aware mutation (configs, tokenizer files, safetensors headers): parse, change one node
//! to a hostile value of the same or another type, serialize again. Numbers become the
//! values that break size arithmetic (0, −1, 2⁶³, 1e308, NaN-like strings, fractions),
//! strings become empty, huge or other keys, containers lose or repeat elements.

use arbitrary::Unstructured;
use serde_json::{json, Value};

const NUMBERS: &[f64] = &[
    0.0,
    1.0,
    -1.0,
    2.0,
    3.0,
    7.0,
    255.0,
    65535.0,
    65536.0,
    2147483647.0,
    4294967296.0,
    9.2e18,
    1.8e19,
    1e308,
    -1e308,
    0.5,
    1e-300,
];

/// Mutates `bytes` as JSON; None when they are not JSON.
pub fn mutate(bytes: &[u8], u: &mut Unstructured) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    let n = count(&v);
    let target = u.choose_index(n).unwrap_or(0);
    let mut i = 0;
    visit(&mut v, target, &mut i, u);
    serde_json::to_vec(&v).ok()
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn visit(v: &mut Value, target: usize, i: &mut usize, u: &mut Unstructured) -> bool {
    if *i == target {
        change(v, u);
        return true;
    }
    *i += 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| visit(x, target, i, u)),
        Value::Object(o) => o.values_mut().any(|x| visit(x, target, i, u)),
        _ => false,
    }
}

fn change(v: &mut Value, u: &mut Unstructured) {
    let choice = u.choose_index(10).unwrap_or(0);
    match (choice, &mut *v) {
        (0..=3, Value::Number(_)) | (0, _) => {
            let x = NUMBERS[u.choose_index(NUMBERS.len()).unwrap_or(0)];
            *v = if x.fract() == 0.0 && x.abs() < 9e18 { json!(x as i64) } else { json!(x) };
            if choice == 1 {
                *v = json!(u64::MAX);
            }
        }
        (1..=3, Value::String(s)) => {
            *s = match choice {
                1 => String::new(),
                2 => "x".repeat(u.int_in_range(1..=100_000).unwrap_or(1)),
                _ => ["F64", "I8", "BOOL", "unknown", "<f4", "null", "../..", "\u{0}"][u.choose_index(8).unwrap_or(0)]
                    .to_string(),
            }
        }
        (1..=3, Value::Array(a)) => match choice {
            1 => a.clear(),
            2 if !a.is_empty() => {
                let k = u.choose_index(a.len()).unwrap_or(0);
                a.remove(k);
            }
            _ => {
                if let Some(x) = a.first().cloned() {
                    let n = u.int_in_range(1..=64).unwrap_or(1);
                    a.extend(std::iter::repeat_n(x, n));
                }
            }
        },
        (1..=3, Value::Object(o)) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            if keys.is_empty() {
                return;
            }
            let k = &keys[u.choose_index(keys.len()).unwrap_or(0)];
            match choice {
                1 => {
                    o.remove(k);
                }
                2 => {
                    let x = o[k].clone();
                    o.insert(format!("{k}_"), x);
                }
                _ => {
                    let other = keys[u.choose_index(keys.len()).unwrap_or(0)].clone();
                    let x = o[&other].clone();
                    o.insert(k.clone(), x);
                }
            }
        }
        (4, _) => *v = Value::Null,
        (5, _) => *v = json!(true),
        (6, _) => *v = json!([]),
        (7, _) => *v = json!({}),
        (8, _) => *v = json!("1e999"),
        _ => {
            // Deep nesting (parsers have recursion limits; the harness checks they hold).
            let depth = u.int_in_range(1..=200).unwrap_or(1);
            let mut x = v.take();
            for _ in 0..depth {
                x = json!([x]);
            }
            *v = x;
        }
    }
}
