//! `google.protobuf.Value` (how gRPC carries the event's `data`) to JSON, following the proto3
//! JSON mapping so that what a producer sends is what a receiver reads.

use prost_types::{Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// Largest integer an f64 holds exactly; integral numbers up to it print without a fraction.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A protobuf struct as a JSON object.
pub fn object(fields: &Struct) -> Map<String, Json> {
    fields
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect()
}

fn to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(fields)) => Json::Object(object(fields)),
    }
}

#[allow(clippy::cast_possible_truncation)]
fn number(n: f64) -> Json {
    // Protobuf numbers are doubles; a receiver expecting `5` must not get `5.0`.
    if n.fract() == 0.0 && n.abs() <= EXACT_INTEGER {
        return Json::Number(Number::from(n as i64));
    }
    // NaN and infinities have no JSON form.
    Number::from_f64(n).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost_types::{ListValue, Struct};
    use serde_json::json;

    use super::*;

    fn v(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    fn whole_numbers_print_without_a_fraction() {
        assert_eq!(to_json(&v(Kind::NumberValue(5.0))).to_string(), "5");
        assert_eq!(to_json(&v(Kind::NumberValue(-3.0))).to_string(), "-3");
    }

    #[test]
    fn fractions_stay_fractions() {
        assert_eq!(to_json(&v(Kind::NumberValue(12.5))).to_string(), "12.5");
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(to_json(&v(Kind::NumberValue(f64::NAN))), Json::Null);
    }

    #[test]
    fn nested_objects_and_lists_convert() {
        let item = Struct {
            fields: BTreeMap::from([
                ("description".to_owned(), v(Kind::StringValue("tea".into()))),
                ("quantity".to_owned(), v(Kind::NumberValue(2.0))),
            ]),
        };
        let data = Struct {
            fields: BTreeMap::from([
                (
                    "items".to_owned(),
                    v(Kind::ListValue(ListValue {
                        values: vec![v(Kind::StructValue(item))],
                    })),
                ),
                ("paid".to_owned(), v(Kind::BoolValue(true))),
                ("memo".to_owned(), v(Kind::NullValue(0))),
            ]),
        };
        assert_eq!(
            to_json(&v(Kind::StructValue(data))),
            json!({"items": [{"description": "tea", "quantity": 2}], "paid": true, "memo": null})
        );
    }
}
