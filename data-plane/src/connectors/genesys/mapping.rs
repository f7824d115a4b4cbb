//! LINE webhook events to Genesys Cloud Open Messaging inbound messages (PROTOCOLS.md §4).
//!
//! Genesys knows text and attachments only; stickers, locations and media LINE keeps to itself
//! become text an agent can read. The customer is the LINE `userId`, so an agent's answer
//! (addressed to `channel.to.id`) can be pushed back to them.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One LINE message, translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// LINE's `webhookEventId` of the event that carried it; empty if LINE sent none.
    pub webhook_event_id: String,
    /// LINE's message id, also `channel.messageId` in the body.
    pub line_message_id: String,
    /// The Open Messaging request body, JSON.
    pub body: Bytes,
}

/// What a webhook body translated to.
#[derive(Debug, Default)]
pub struct Translation {
    pub messages: Vec<InboundMessage>,
    /// Events that are not messages (follow, postback, ...) or have no user to answer.
    pub skipped: usize,
}

#[derive(Deserialize)]
struct Webhook {
    /// Read one by one: an event shaped unlike any known one is skipped, not the whole webhook.
    #[serde(default)]
    events: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    timestamp: i64,
    #[serde(default)]
    webhook_event_id: String,
    source: Option<Source>,
    message: Option<LineMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Source {
    user_id: Option<String>,
}

/// The fields of every LINE message type in one shape; each type fills its own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineMessage {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
    /// A text message's text, or a sticker's (message stickers).
    text: Option<String>,
    package_id: Option<String>,
    sticker_id: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    title: Option<String>,
    address: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    content_provider: Option<ContentProvider>,
    file_name: Option<String>,
    file_size: Option<u64>,
    /// Milliseconds, for video and audio.
    duration: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentProvider {
    #[serde(rename = "type", default)]
    kind: String,
    original_content_url: Option<String>,
}

#[derive(Serialize)]
struct OpenMessage {
    channel: Channel,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    content: Vec<Content>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    from: Customer,
    time: String,
    message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Customer {
    id: String,
    id_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    custom_attributes: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    content_type: &'static str,
    attachment: Attachment,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Attachment {
    media_type: &'static str,
    url: String,
    mime: &'static str,
}

/// Translates every message event of a LINE webhook body (already verified) into an Open
/// Messaging inbound message. `channel_metadata` and `set_attributes` become
/// `channel.metadata.customAttributes`; the set's attributes win over the channel's.
pub fn translate(
    webhook: &[u8],
    channel_metadata: &HashMap<String, String>,
    set_attributes: &HashMap<String, String>,
) -> Result<Translation, serde_json::Error> {
    let webhook: Webhook = serde_json::from_slice(webhook)?;
    let mut attributes: BTreeMap<String, String> = channel_metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.extend(set_attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut translation = Translation::default();
    for event in webhook.events {
        let event = serde_json::from_value::<Event>(event).ok();
        match event.and_then(|event| inbound_message(event, &attributes)) {
            Some(message) => translation.messages.push(message),
            None => translation.skipped += 1,
        }
    }
    Ok(translation)
}

fn inbound_message(event: Event, attributes: &BTreeMap<String, String>) -> Option<InboundMessage> {
    if event.kind != "message" {
        return None;
    }
    let message = event.message?;
    let user_id = event.source?.user_id.filter(|id| !id.is_empty())?;
    if message.id.is_empty() {
        return None;
    }
    let (text, content) = match attachment(&message) {
        Some(attachment) => (None, vec![attachment]),
        None => (Some(readable_text(&message)), Vec::new()),
    };
    let body = OpenMessage {
        channel: Channel {
            from: Customer {
                id: user_id,
                id_type: "Opaque",
            },
            time: iso_time(event.timestamp),
            message_id: message.id.clone(),
            metadata: (!attributes.is_empty()).then(|| Metadata {
                custom_attributes: attributes.clone(),
            }),
        },
        text,
        content,
    };
    Some(InboundMessage {
        webhook_event_id: event.webhook_event_id,
        line_message_id: message.id,
        body: Bytes::from(serde_json::to_vec(&body).expect("plain structs always serialise")),
    })
}

/// Media hosted by the brand (`contentProvider.type` = `external`) has a URL an agent can open;
/// media LINE hosts needs the channel's token to fetch, so it gets a placeholder instead.
fn attachment(message: &LineMessage) -> Option<Content> {
    let provider = message.content_provider.as_ref()?;
    if provider.kind != "external" {
        return None;
    }
    let url = provider.original_content_url.clone()?;
    let (media_type, mime) = match message.kind.as_str() {
        "image" => ("Image", mime_of(&url, "image/jpeg")),
        "video" => ("Video", mime_of(&url, "video/mp4")),
        "audio" => ("Audio", mime_of(&url, "audio/mp4")),
        _ => return None,
    };
    Some(Content {
        content_type: "Attachment",
        attachment: Attachment {
            media_type,
            url,
            mime,
        },
    })
}

fn mime_of(url: &str, default: &'static str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let extension = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "m4a" => "audio/mp4",
        "mp3" => "audio/mpeg",
        _ => default,
    }
}

fn readable_text(message: &LineMessage) -> String {
    let id = &message.id;
    match message.kind.as_str() {
        "text" => message.text.clone().unwrap_or_default(),
        "sticker" => sticker_text(message),
        "location" => location_text(message),
        "image" => format!("[LINE image: kept by LINE, message id {id}]"),
        "video" => format!(
            "[LINE video{}: kept by LINE, message id {id}]",
            length(message.duration)
        ),
        "audio" => format!(
            "[LINE voice message{}: kept by LINE, message id {id}]",
            length(message.duration)
        ),
        "file" => {
            let name = message.file_name.as_deref().unwrap_or("unnamed");
            let size = message
                .file_size
                .map(|n| format!(", {n} bytes"))
                .unwrap_or_default();
            format!("[LINE file \"{name}\"{size}: kept by LINE, message id {id}]")
        }
        other => format!("[LINE {other} message, message id {id}]"),
    }
}

fn sticker_text(message: &LineMessage) -> String {
    let mut text = format!(
        "[LINE sticker] package {}, sticker {}",
        message.package_id.as_deref().unwrap_or("?"),
        message.sticker_id.as_deref().unwrap_or("?"),
    );
    if !message.keywords.is_empty() {
        text.push_str("; keywords: ");
        text.push_str(&message.keywords.join(", "));
    }
    if let Some(said) = message.text.as_deref().filter(|t| !t.is_empty()) {
        text.push_str("; text: ");
        text.push_str(said);
    }
    text
}

fn location_text(message: &LineMessage) -> String {
    let mut lines = vec!["[LINE location]".to_owned()];
    lines.extend(
        [&message.title, &message.address]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned(),
    );
    if let (Some(lat), Some(lng)) = (message.latitude, message.longitude) {
        lines.push(maps_url(lat, lng));
    }
    lines.join("\n")
}

/// A link any browser opens on a map (Google Maps URLs, `api=1`).
pub fn maps_url(latitude: f64, longitude: f64) -> String {
    format!("https://www.google.com/maps/search/?api=1&query={latitude},{longitude}")
}

fn length(duration_ms: Option<u64>) -> String {
    duration_ms
        .map(|ms| format!(", {} s", ms.div_ceil(1000)))
        .unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds, e.g. `2025-01-01T00:02:00.123Z`.
fn iso_time(unix_ms: i64) -> String {
    prost_types::Timestamp {
        seconds: unix_ms.div_euclid(1000),
        nanos: i32::try_from(unix_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn event(message: Value) -> Vec<u8> {
        json!({
            "destination": "Ub1",
            "events": [{
                "type": "message",
                "mode": "active",
                "timestamp": 1_735_689_600_123_i64,
                "source": {"type": "user", "userId": "U4af"},
                "webhookEventId": "01JG",
                "deliveryContext": {"isRedelivery": false},
                "replyToken": "r",
                "message": message,
            }]
        })
        .to_string()
        .into_bytes()
    }

    fn one(body: &[u8]) -> Value {
        one_with(body, &HashMap::new(), &HashMap::new())
    }

    fn one_with(
        body: &[u8],
        channel: &HashMap<String, String>,
        set: &HashMap<String, String>,
    ) -> Value {
        let t = translate(body, channel, set).unwrap();
        assert_eq!(t.messages.len(), 1);
        serde_json::from_slice(&t.messages[0].body).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_text_message_becomes_its_text() {
        let m = one(&event(
            json!({"id": "1", "type": "text", "text": "Where is my order?"}),
        ));
        assert_eq!(m["text"], "Where is my order?");
        assert!(m.get("content").is_none());
    }

    #[test]
    fn the_sender_is_the_line_user_id_as_an_opaque_id() {
        let m = one(&event(json!({"id": "1", "type": "text", "text": "hi"})));
        assert_eq!(
            m["channel"]["from"],
            json!({"id": "U4af", "idType": "Opaque"})
        );
    }

    #[test]
    fn the_message_id_is_the_line_message_id() {
        let t = translate(
            &event(json!({"id": "5372", "type": "text", "text": "hi"})),
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap();
        let m: Value = serde_json::from_slice(&t.messages[0].body).unwrap();
        assert_eq!(m["channel"]["messageId"], "5372");
        assert_eq!(t.messages[0].line_message_id, "5372");
        assert_eq!(t.messages[0].webhook_event_id, "01JG");
    }

    #[test]
    fn the_time_is_the_event_timestamp_in_iso_8601() {
        let m = one(&event(json!({"id": "1", "type": "text", "text": "hi"})));
        assert_eq!(m["channel"]["time"], "2025-01-01T00:00:00.123Z");
    }

    #[test]
    fn a_sticker_reads_with_its_package_sticker_and_keywords() {
        let m = one(&event(json!({
            "id": "1", "type": "sticker", "packageId": "11537", "stickerId": "52002734",
            "stickerResourceType": "ANIMATION", "keywords": ["Brown", "Cony", "Happy"]
        })));
        assert_eq!(
            m["text"],
            "[LINE sticker] package 11537, sticker 52002734; keywords: Brown, Cony, Happy"
        );
    }

    #[test]
    fn a_message_sticker_keeps_its_text() {
        let m = one(&event(json!({
            "id": "1", "type": "sticker", "packageId": "1", "stickerId": "2",
            "stickerResourceType": "MESSAGE", "text": "Thanks!"
        })));
        assert_eq!(
            m["text"],
            "[LINE sticker] package 1, sticker 2; text: Thanks!"
        );
    }

    #[test]
    fn a_location_reads_with_title_address_and_a_maps_link() {
        let m = one(&event(json!({
            "id": "1", "type": "location", "title": "Taipei 101",
            "address": "No. 7, Sec. 5, Xinyi Rd.", "latitude": 25.033976, "longitude": 121.564472
        })));
        assert_eq!(
            m["text"],
            "[LINE location]\nTaipei 101\nNo. 7, Sec. 5, Xinyi Rd.\n\
             https://www.google.com/maps/search/?api=1&query=25.033976,121.564472"
        );
    }

    #[test]
    fn a_location_without_title_or_address_still_has_its_link() {
        let m = one(&event(json!({
            "id": "1", "type": "location", "latitude": -33.5, "longitude": 151.25
        })));
        assert_eq!(
            m["text"],
            "[LINE location]\nhttps://www.google.com/maps/search/?api=1&query=-33.5,151.25"
        );
    }

    #[test]
    fn media_kept_by_line_becomes_a_readable_placeholder() {
        let cases = [
            (
                json!({"id": "9", "type": "image", "contentProvider": {"type": "line"}}),
                "[LINE image: kept by LINE, message id 9]",
            ),
            (
                json!({"id": "9", "type": "video", "duration": 12_300, "contentProvider": {"type": "line"}}),
                "[LINE video, 13 s: kept by LINE, message id 9]",
            ),
            (
                json!({"id": "9", "type": "audio", "duration": 4_000, "contentProvider": {"type": "line"}}),
                "[LINE voice message, 4 s: kept by LINE, message id 9]",
            ),
            (
                json!({"id": "9", "type": "file", "fileName": "invoice.pdf", "fileSize": 2048}),
                "[LINE file \"invoice.pdf\", 2048 bytes: kept by LINE, message id 9]",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(one(&event(message))["text"], expected);
        }
    }

    #[test]
    fn media_with_an_external_url_becomes_an_attachment() {
        let m = one(&event(json!({
            "id": "1", "type": "image",
            "contentProvider": {"type": "external",
                "originalContentUrl": "https://cdn.brand.example/a.png",
                "previewImageUrl": "https://cdn.brand.example/a-small.png"}
        })));
        assert!(m.get("text").is_none());
        assert_eq!(
            m["content"],
            json!([{"contentType": "Attachment", "attachment": {
                "mediaType": "Image", "url": "https://cdn.brand.example/a.png", "mime": "image/png"}}])
        );
    }

    #[test]
    fn an_unknown_message_type_is_named_in_its_placeholder() {
        let m = one(&event(json!({"id": "7", "type": "hologram"})));
        assert_eq!(m["text"], "[LINE hologram message, message id 7]");
    }

    #[test]
    fn custom_attributes_merge_channel_metadata_and_set_attributes_with_the_set_winning() {
        let m = one_with(
            &event(json!({"id": "1", "type": "text", "text": "hi"})),
            &map(&[("market", "TW"), ("tier", "gold")]),
            &map(&[("market", "Thailand"), ("brand", "Retail_Thai")]),
        );
        assert_eq!(
            m["channel"]["metadata"]["customAttributes"],
            json!({"market": "Thailand", "brand": "Retail_Thai", "tier": "gold"})
        );
    }

    #[test]
    fn without_attributes_there_is_no_metadata() {
        let m = one(&event(json!({"id": "1", "type": "text", "text": "hi"})));
        assert!(m["channel"].get("metadata").is_none());
    }

    #[test]
    fn non_message_events_are_skipped_and_counted() {
        let body = json!({"destination": "U", "events": [
            {"type": "follow", "timestamp": 1, "source": {"type": "user", "userId": "U1"}, "webhookEventId": "a"},
            {"type": "message", "timestamp": 1, "source": {"type": "user", "userId": "U1"}, "webhookEventId": "b",
             "message": {"id": "1", "type": "text", "text": "hi"}},
            {"type": "postback", "timestamp": 1, "source": {"type": "user", "userId": "U1"}, "webhookEventId": "c",
             "postback": {"data": "x"}},
            {"type": "brandNewThing", "webhookEventId": "d"}
        ]});
        let t = translate(
            body.to_string().as_bytes(),
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(t.messages.len(), 1);
        assert_eq!(t.skipped, 3);
    }

    #[test]
    fn an_event_of_an_unexpected_shape_is_skipped_and_the_others_still_go() {
        let body = json!({"events": [
            {"type": "message", "timestamp": "yesterday", "source": {"type": "user", "userId": "U1"},
             "message": {"id": "1", "type": "text", "text": "odd"}},
            {"type": "message", "timestamp": 1, "source": {"type": "user", "userId": "U1"},
             "message": {"id": "2", "type": "text", "text": "fine"}}
        ]});
        let t = translate(
            body.to_string().as_bytes(),
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(t.messages.len(), 1);
        assert_eq!(t.messages[0].line_message_id, "2");
        assert_eq!(t.skipped, 1);
    }

    #[test]
    fn a_message_without_a_user_to_answer_is_skipped() {
        let body = json!({"events": [{"type": "message", "timestamp": 1,
            "source": {"type": "group", "groupId": "C1"},
            "message": {"id": "1", "type": "text", "text": "hi"}}]});
        let t = translate(
            body.to_string().as_bytes(),
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap();
        assert!(t.messages.is_empty());
        assert_eq!(t.skipped, 1);
    }

    #[test]
    fn each_message_event_becomes_its_own_message() {
        let body = json!({"events": [
            {"type": "message", "timestamp": 1, "source": {"type": "user", "userId": "U1"},
             "webhookEventId": "a", "message": {"id": "1", "type": "text", "text": "one"}},
            {"type": "message", "timestamp": 2, "source": {"type": "user", "userId": "U1"},
             "webhookEventId": "b", "message": {"id": "2", "type": "text", "text": "two"}}
        ]});
        let t = translate(
            body.to_string().as_bytes(),
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap();
        let ids: Vec<&str> = t
            .messages
            .iter()
            .map(|m| m.line_message_id.as_str())
            .collect();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn a_body_that_is_not_a_webhook_is_an_error() {
        assert!(translate(b"[1,2]", &HashMap::new(), &HashMap::new()).is_err());
    }
}
