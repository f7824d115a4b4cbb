//! Agent to customer: what a Genesys outbound message (PROTOCOLS.md §4) asks of LINE.
//!
//! Text becomes LINE text messages; image attachments become LINE image messages; other
//! attachments become links. Receipts and typing indicators only need an acknowledgement.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::connectors::line_push::MAX_MESSAGES;

/// LINE's limit on a text message, in characters.
const MAX_TEXT_CHARS: usize = 5000;

/// What to do with one outbound message.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentMessage {
    /// Push `messages` (1 to 5 LINE message objects) to the LINE user `to`.
    Push {
        /// Genesys's id of the message: what makes its retries recognisable.
        message_id: String,
        to: String,
        messages: Vec<Value>,
    },
    /// Acknowledge and send nothing (`Receipt`, `Event` such as typing, unknown types).
    Acknowledge { kind: String },
}

/// Why an outbound body cannot be acted on; its `Display` is the 400 answer's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("body is not an Open Messaging outbound message")]
    NotAMessage,
    #[error("the message has no id")]
    NoMessageId,
    #[error("the message has no channel.to.id")]
    NoRecipient,
    #[error("the message has neither text nor attachments")]
    Empty,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outbound {
    #[serde(default)]
    id: String,
    channel: Option<Channel>,
    #[serde(rename = "type", default)]
    kind: String,
    text: Option<String>,
    #[serde(default)]
    content: Vec<Content>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    message_id: Option<String>,
    to: Option<Party>,
}

#[derive(Deserialize)]
struct Party {
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    attachment: Option<Attachment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attachment {
    media_type: Option<String>,
    url: Option<String>,
    filename: Option<String>,
}

/// Reads an outbound body whose signature has been checked.
pub fn read(body: &[u8]) -> Result<AgentMessage, Unusable> {
    let message: Outbound = serde_json::from_slice(body).map_err(|_| Unusable::NotAMessage)?;
    if !matches!(message.kind.as_str(), "Text" | "Structured") {
        return Ok(AgentMessage::Acknowledge { kind: message.kind });
    }
    let channel = message.channel.as_ref();
    let message_id = Some(message.id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| channel.and_then(|c| c.message_id.clone()))
        .filter(|id| !id.is_empty())
        .ok_or(Unusable::NoMessageId)?;
    let to = channel
        .and_then(|c| c.to.as_ref())
        .map(|p| p.id.clone())
        .filter(|id| !id.is_empty())
        .ok_or(Unusable::NoRecipient)?;
    let messages = line_messages(message.text.as_deref(), &message.content);
    if messages.is_empty() {
        return Err(Unusable::Empty);
    }
    Ok(AgentMessage::Push {
        message_id,
        to,
        messages,
    })
}

enum Part {
    Text(String),
    Image(String),
}

impl Part {
    fn message(self) -> Value {
        match self {
            Part::Text(text) => json!({"type": "text", "text": text}),
            // LINE shows the original as its own preview when none smaller is offered.
            Part::Image(url) => {
                json!({"type": "image", "originalContentUrl": url, "previewImageUrl": url})
            }
        }
    }

    fn as_text(&self) -> &str {
        match self {
            Part::Text(text) | Part::Image(text) => text,
        }
    }
}

fn line_messages(text: Option<&str>, content: &[Content]) -> Vec<Value> {
    let mut parts: Vec<Part> = text
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            chunks(t, MAX_TEXT_CHARS)
                .into_iter()
                .map(Part::Text)
                .collect()
        })
        .unwrap_or_default();
    for attachment in content.iter().filter_map(|c| c.attachment.as_ref()) {
        let Some(url) = attachment.url.clone().filter(|u| !u.is_empty()) else {
            continue;
        };
        // LINE fetches images itself and only over HTTPS; anything else goes as a link.
        let is_image = attachment.media_type.as_deref() == Some("Image");
        if is_image && url.starts_with("https://") {
            parts.push(Part::Image(url));
        } else {
            let link = match attachment.filename.as_deref().filter(|f| !f.is_empty()) {
                Some(name) => format!("{name}: {url}"),
                None => url,
            };
            parts.push(Part::Text(link));
        }
    }
    if parts.len() > MAX_MESSAGES {
        // One push carries at most five messages: the overflow travels as links in the last.
        let overflow: Vec<Part> = parts.split_off(MAX_MESSAGES - 1);
        let joined = overflow
            .iter()
            .map(Part::as_text)
            .collect::<Vec<_>>()
            .join("\n");
        parts.push(Part::Text(joined.chars().take(MAX_TEXT_CHARS).collect()));
    }
    parts.into_iter().map(Part::message).collect()
}

fn chunks(text: &str, max_chars: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(max_chars)
        .map(|c| c.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_message(text: &str) -> Vec<u8> {
        json!({
            "id": "gen-msg-1",
            "channel": {"id": "ch", "platform": "Open", "type": "Private", "messageId": "gen-msg-1",
                        "to": {"id": "U4af", "idType": "Opaque"}, "from": {"id": "int-1"},
                        "time": "2025-01-01T00:00:00.000Z"},
            "conversationId": "conv-1",
            "direction": "Outbound",
            "type": "Text",
            "text": text,
        })
        .to_string()
        .into_bytes()
    }

    fn with(mut base: Value, key: &str, value: Value) -> Vec<u8> {
        base[key] = value;
        base.to_string().into_bytes()
    }

    fn base() -> Value {
        serde_json::from_slice(&text_message("Hello from the agent")).unwrap()
    }

    #[test]
    fn agent_text_is_pushed_to_the_customer() {
        assert_eq!(
            read(&text_message("Hello from the agent")).unwrap(),
            AgentMessage::Push {
                message_id: "gen-msg-1".to_owned(),
                to: "U4af".to_owned(),
                messages: vec![json!({"type": "text", "text": "Hello from the agent"})],
            }
        );
    }

    #[test]
    fn receipts_and_typing_events_are_only_acknowledged() {
        for kind in ["Receipt", "Event"] {
            let body = with(base(), "type", json!(kind));
            assert_eq!(
                read(&body).unwrap(),
                AgentMessage::Acknowledge {
                    kind: kind.to_owned()
                }
            );
        }
    }

    #[test]
    fn an_image_attachment_becomes_a_line_image() {
        let body = with(
            base(),
            "content",
            json!([{"contentType": "Attachment", "attachment": {
                "mediaType": "Image", "url": "https://files.genesys.example/p.jpg", "mime": "image/jpeg"}}]),
        );
        let AgentMessage::Push { messages, .. } = read(&body).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(
            messages[1],
            json!({"type": "image",
            "originalContentUrl": "https://files.genesys.example/p.jpg",
            "previewImageUrl": "https://files.genesys.example/p.jpg"})
        );
    }

    #[test]
    fn other_attachments_become_links() {
        let body = with(
            base(),
            "content",
            json!([{"contentType": "Attachment", "attachment": {
                "mediaType": "File", "url": "https://files.genesys.example/terms.pdf", "filename": "terms.pdf"}}]),
        );
        let AgentMessage::Push { messages, .. } = read(&body).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(
            messages[1],
            json!({"type": "text", "text": "terms.pdf: https://files.genesys.example/terms.pdf"})
        );
    }

    #[test]
    fn an_image_without_https_goes_as_a_link() {
        let body = with(
            base(),
            "content",
            json!([{"attachment": {"mediaType": "Image", "url": "http://plain.example/p.jpg"}}]),
        );
        let AgentMessage::Push { messages, .. } = read(&body).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(messages[1]["type"], "text");
    }

    #[test]
    fn more_than_five_parts_fit_in_one_push() {
        let images: Vec<Value> = (0..7)
            .map(|i| json!({"attachment": {"mediaType": "Image", "url": format!("https://x.example/{i}.png")}}))
            .collect();
        let body = with(base(), "content", Value::Array(images));
        let AgentMessage::Push { messages, .. } = read(&body).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[4]["type"], "text");
        assert!(
            messages[4]["text"]
                .as_str()
                .unwrap()
                .contains("https://x.example/6.png")
        );
    }

    #[test]
    fn long_text_is_split_at_lines_limit() {
        let long = "a".repeat(MAX_TEXT_CHARS + 10);
        let AgentMessage::Push { messages, .. } = read(&text_message(&long)).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1]["text"], "a".repeat(10));
    }

    #[test]
    fn the_channel_message_id_stands_in_for_a_missing_id() {
        let body = with(base(), "id", json!(""));
        let AgentMessage::Push { message_id, .. } = read(&body).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(message_id, "gen-msg-1");
    }

    #[test]
    fn a_message_without_a_recipient_is_unusable() {
        let mut value = base();
        value["channel"]["to"] = json!(null);
        assert_eq!(
            read(value.to_string().as_bytes()),
            Err(Unusable::NoRecipient)
        );
    }

    #[test]
    fn a_text_message_with_nothing_in_it_is_unusable() {
        assert_eq!(read(&text_message("  ")), Err(Unusable::Empty));
    }

    #[test]
    fn a_body_that_is_not_json_is_unusable() {
        assert_eq!(read(b"nope"), Err(Unusable::NotAMessage));
    }
}
