//! The `data` of a test event for each topic of the catalog: every field PROTOCOLS.md §2 lists,
//! with plausible values, so a brand's integration sees the shape real events have.

use serde_json::{Map, Value, json};

/// The sample `data` of `topic`; `None` for a topic not in the catalog.
pub(crate) fn sample(topic: &str) -> Option<Map<String, Value>> {
    let data = match topic {
        "receipt.receipt_validated" => json!({
            "line_uid": "U4af4980629e2b6e3c8f1e2b3a4c5d6e7",
            "customer_id": "cus_0001",
            "campaign_name": "Spring receipt lottery",
            "number": "AB-12345678",
            "datetime": "2025-03-01T12:30:00+08:00",
            "upload_datetime": "2025-03-01T18:05:12+08:00",
            "random_number": "8421",
            "channel": "LINE",
            "items": [
                {"description": "Oolong tea 600ml", "unit_price": 35, "quantity": 2, "amount": 70},
                {"description": "Rice ball", "unit_price": 45, "quantity": 1, "amount": 45}
            ]
        }),
        "form.surveycake_submitted" => json!({
            "line_uid": "U4af4980629e2b6e3c8f1e2b3a4c5d6e7",
            "customer_id": "cus_0001",
            "survey_name": "Store satisfaction survey",
            "answer_hash": "7f3c9a1e5b2d4f6a8c0e",
            "answer": {"satisfaction": "5", "favourite_store": "Taipei Main", "comment": "Great service"}
        }),
        "pnp.status_updated" => json!({
            "pnp_setting_id": 1024,
            "pnp_setting_name": "Order shipped",
            "pnp_message_id": "pnp_msg_5f2a",
            "event_id": "evt_order_98765",
            "customized_id": "order-98765",
            "phone_number": "+886912345678",
            "status": "delivered",
            "line_push_status": "success",
            "line_push_delivered_at": "2025-03-01T18:05:30+08:00",
            "sms_status": "not_sent"
        }),
        "pnp.profile_updated" => json!({
            "pnp_setting_id": 1024,
            "pnp_setting_name": "Order shipped",
            "phone_number": "+886912345678",
            "source": "pnp",
            "line_uid": "U4af4980629e2b6e3c8f1e2b3a4c5d6e7",
            "customer_id": "cus_0001"
        }),
        "prize.points_added" => json!({
            "prize_name": "Member points",
            "points_id": "pts_20250301_0001",
            "points_category": "purchase",
            "line_uid": "U4af4980629e2b6e3c8f1e2b3a4c5d6e7",
            "customer_id": "cus_0001",
            "points_memo": "Receipt AB-12345678",
            "points_count": 50,
            "points_expire_date": "2025-12-31"
        }),
        "message.first_open" => json!({
            "message_type": "broadcast",
            "message_id": "bc_20250301_spring",
            "line_uid": "U4af4980629e2b6e3c8f1e2b3a4c5d6e7",
            "customer_id": "cus_0001"
        }),
        _ => return None,
    };
    match data {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::topics::TOPICS;

    use super::*;

    fn fields(topic: &str) -> Vec<String> {
        sample(topic).unwrap().keys().cloned().collect()
    }

    #[test]
    fn every_catalog_topic_has_a_sample() {
        for topic in TOPICS {
            assert!(sample(topic.name).is_some(), "{}", topic.name);
        }
    }

    #[test]
    fn a_topic_outside_the_catalog_has_none() {
        assert!(sample("order.created").is_none());
    }

    #[test]
    fn the_receipt_sample_has_every_documented_field() {
        let f = fields("receipt.receipt_validated");
        for name in [
            "line_uid",
            "customer_id",
            "campaign_name",
            "number",
            "datetime",
            "upload_datetime",
            "random_number",
            "channel",
            "items",
        ] {
            assert!(f.iter().any(|x| x == name), "{name}");
        }
        let items = &sample("receipt.receipt_validated").unwrap()["items"];
        for name in ["description", "unit_price", "quantity", "amount"] {
            assert!(items[0].get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn the_pnp_status_sample_has_every_documented_field() {
        let f = fields("pnp.status_updated");
        for name in [
            "pnp_setting_id",
            "pnp_setting_name",
            "pnp_message_id",
            "event_id",
            "customized_id",
            "phone_number",
            "status",
            "line_push_status",
            "line_push_delivered_at",
            "sms_status",
        ] {
            assert!(f.iter().any(|x| x == name), "{name}");
        }
    }

    #[test]
    fn the_points_sample_has_every_documented_field() {
        let f = fields("prize.points_added");
        for name in [
            "prize_name",
            "points_id",
            "points_category",
            "line_uid",
            "customer_id",
            "points_memo",
            "points_count",
            "points_expire_date",
        ] {
            assert!(f.iter().any(|x| x == name), "{name}");
        }
    }

    #[test]
    fn the_other_samples_have_their_documented_fields() {
        let cases: [(&str, &[&str]); 3] = [
            (
                "form.surveycake_submitted",
                &[
                    "line_uid",
                    "customer_id",
                    "survey_name",
                    "answer_hash",
                    "answer",
                ],
            ),
            (
                "pnp.profile_updated",
                &[
                    "pnp_setting_id",
                    "pnp_setting_name",
                    "phone_number",
                    "source",
                    "line_uid",
                    "customer_id",
                ],
            ),
            (
                "message.first_open",
                &["message_type", "message_id", "line_uid", "customer_id"],
            ),
        ];
        for (topic, names) in cases {
            let f = fields(topic);
            for name in names {
                assert!(f.iter().any(|x| x == name), "{topic}: {name}");
            }
        }
    }
}
