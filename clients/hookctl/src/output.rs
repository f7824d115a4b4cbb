//! What a command prints: a resource as `key: value` lines or JSON, a list as a table or JSON.

use serde_json::Value;

use crate::table::Table;

pub enum Printout {
    Resource(Value),
    List {
        json: Value,
        table: Table,
        next_page_token: String,
    },
    Deleted(String),
    /// A token revoked (`revoked <id>`; `{}` as JSON).
    Revoked(String),
    /// Exact text, the same with or without `--json` (`line sign`).
    Text(String),
}

/// The text for stdout and, for a list with more pages, a hint for stderr (kept off stdout so
/// a table can be piped as is).
pub struct Rendered {
    pub stdout: String,
    pub stderr: Option<String>,
}

impl Printout {
    pub fn render(&self, json: bool) -> Rendered {
        let stdout = match (self, json) {
            (Printout::Text(text), _) => text.clone(),
            (Printout::Resource(value), true) | (Printout::List { json: value, .. }, true) => {
                pretty(value)
            }
            (Printout::Deleted(_) | Printout::Revoked(_), true) => "{}\n".to_owned(),
            (Printout::Resource(value), false) => key_value_lines(value),
            (Printout::List { table, .. }, false) => table.render(),
            (Printout::Deleted(id), false) => format!("deleted {id}\n"),
            (Printout::Revoked(id), false) => format!("revoked {id}\n"),
        };
        let stderr = match self {
            Printout::List {
                next_page_token, ..
            } if !json && !next_page_token.is_empty() => Some(format!(
                "more results: --page-token {next_page_token} (or --all)"
            )),
            _ => None,
        };
        Rendered { stdout, stderr }
    }
}

fn pretty(value: &Value) -> String {
    // Serialising a Value cannot fail: its keys are strings by construction.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Flattens a JSON object into `key: value` lines: nested keys joined with `.`, list items as
/// `key[i]`, lists of plain values joined with `, `; unset and empty fields left out.
pub fn key_value_lines(value: &Value) -> String {
    let mut out = String::new();
    flatten("", value, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut String) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            // `id` first: it is what a reader copies into the next command.
            let ordered = map
                .iter()
                .filter(|(k, _)| *k == "id")
                .chain(map.iter().filter(|(k, _)| *k != "id"));
            for (key, child) in ordered {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, child, out);
            }
        }
        Value::Array(items) if items.iter().all(is_plain) => {
            let joined: Vec<String> = items.iter().map(plain).collect();
            line(prefix, &joined.join(", "), out);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        other => line(prefix, &plain(other), out),
    }
}

fn is_plain(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn line(key: &str, value: &str, out: &mut String) {
    if value.is_empty() {
        return;
    }
    if value.contains('\n') {
        out.push_str(key);
        out.push_str(":\n");
        for l in value.lines() {
            out.push_str("  ");
            out.push_str(l);
            out.push('\n');
        }
    } else {
        out.push_str(key);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_value_lines_put_the_id_first() {
        let v = json!({"displayName": "Acme", "id": "tnt_1"});
        assert_eq!(key_value_lines(&v), "id: tnt_1\ndisplayName: Acme\n");
    }

    #[test]
    fn key_value_lines_join_nested_keys_with_dots() {
        let v = json!({"entitlements": {"maxActiveSubscriptions": 3}});
        assert_eq!(
            key_value_lines(&v),
            "entitlements.maxActiveSubscriptions: 3\n"
        );
    }

    #[test]
    fn key_value_lines_join_plain_lists_with_commas() {
        let v = json!({"eventTypes": ["a.b", "c.d"]});
        assert_eq!(key_value_lines(&v), "eventTypes: a.b, c.d\n");
    }

    #[test]
    fn key_value_lines_index_lists_of_objects() {
        let v = json!({"zones": [{"zone": "ZONE_1"}, {"zone": "ZONE_2"}]});
        assert_eq!(
            key_value_lines(&v),
            "zones[0].zone: ZONE_1\nzones[1].zone: ZONE_2\n"
        );
    }

    #[test]
    fn key_value_lines_leave_out_unset_and_empty_fields() {
        let v = json!({"a": null, "b": "", "c": [], "d": {}, "e": false});
        assert_eq!(key_value_lines(&v), "e: false\n");
    }

    #[test]
    fn key_value_lines_indent_multi_line_values() {
        let v = json!({"bodyText": "Hello,\nworld"});
        assert_eq!(key_value_lines(&v), "bodyText:\n  Hello,\n  world\n");
    }

    #[test]
    fn json_output_is_the_value_pretty_printed() {
        let r = Printout::Resource(json!({"id": "x"})).render(true);
        assert_eq!(r.stdout, "{\n  \"id\": \"x\"\n}\n");
    }

    #[test]
    fn a_deletion_prints_an_empty_object_as_json() {
        assert_eq!(Printout::Deleted("x".into()).render(true).stdout, "{}\n");
        assert_eq!(
            Printout::Deleted("x".into()).render(false).stdout,
            "deleted x\n"
        );
    }

    #[test]
    fn a_list_with_more_pages_hints_on_stderr_only() {
        let list = Printout::List {
            json: json!({}),
            table: Table::new(&["ID"]),
            next_page_token: "p2".into(),
        };
        let r = list.render(false);
        assert_eq!(r.stdout, "ID\n");
        assert!(r.stderr.unwrap().contains("--page-token p2"));
        assert!(list.render(true).stderr.is_none());
    }
}
