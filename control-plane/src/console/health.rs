//! A target's last 24 hours: delivered and failed attempt counts, and a bar chart drawn here as
//! SVG (one stacked bar an hour), so no script or chart library is needed.

use hookplane_proto::v1::{GetTargetHealthRequest, TargetHealth};
use maud::{Markup, html};

use super::Visit;
use super::layout;
use super::text::{Text, fill};

const WIDTH: u32 = 480;
const HEIGHT: u32 = 120;
/// Room under the bars for the hour labels.
const AXIS: u32 = 16;

/// The health of one target (exactly one id set); `None` when the API does not give it (the
/// page still shows its attempts).
pub async fn of(visit: &Visit, set: &str, subscription: &str) -> Option<TargetHealth> {
    visit
        .api
        .deliveries()
        .get_target_health(visit.api.call(GetTargetHealthRequest {
            forwarding_set_id: set.to_owned(),
            subscription_id: subscription.to_owned(),
        }))
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

/// `3 delivered · 1 failed in 24 h`.
pub fn counts(t: &Text, health: &TargetHealth) -> Markup {
    html! {
        span.health {
            span.ok { (fill(t.health_delivered, &[&health.delivered.to_string()])) }
            " · "
            span class=(if health.failed > 0 { "bad" } else { "muted" }) {
                (fill(t.health_failed, &[&health.failed.to_string()]))
            }
            " " span.muted { (t.health_window) }
        }
    }
}

/// The counts and a stacked bar an hour, oldest on the left.
pub fn chart(t: &Text, health: &TargetHealth) -> Markup {
    let hours = health.hours.len().max(1) as u32;
    let slot = WIDTH / hours;
    let peak = health
        .hours
        .iter()
        .map(|h| h.delivered + h.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let plot = HEIGHT - AXIS;
    let scale = |n: u32| n * plot / peak;
    let label = fill(
        t.health_chart_label,
        &[&health.delivered.to_string(), &health.failed.to_string()],
    );
    html! {
        section.card {
            h2 { (t.health_title) }
            p { (counts(t, health)) }
            svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(label) {
                title { (label) }
                line x1="0" y1=(plot) x2=(WIDTH) y2=(plot) stroke="#9aa4b5" stroke-width="1" {}
                @for (i, hour) in health.hours.iter().enumerate() {
                    @let x = i as u32 * slot + 1;
                    @let delivered = scale(hour.delivered);
                    @let failed = scale(hour.failed);
                    @if hour.delivered > 0 {
                        rect x=(x) y=(plot - delivered) width=(slot - 2) height=(delivered) fill="#1a7f37" {
                            title { (layout::time(hour.start_time.as_ref())) ": " (fill(t.health_delivered, &[&hour.delivered.to_string()])) }
                        }
                    }
                    @if hour.failed > 0 {
                        rect x=(x) y=(plot - delivered - failed) width=(slot - 2) height=(failed) fill="#b42318" {
                            title { (layout::time(hour.start_time.as_ref())) ": " (fill(t.health_failed, &[&hour.failed.to_string()])) }
                        }
                    }
                    @if i % 6 == 0 {
                        text x=(x) y=(HEIGHT - 3) font-size="10" fill="#6b7280" {
                            (layout::time(hour.start_time.as_ref()).get(11..16).unwrap_or_default())
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::HealthHour;

    use super::*;
    use crate::console::text::ENGLISH;

    fn hour(delivered: u32, failed: u32) -> HealthHour {
        HealthHour {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_796_558_400,
                nanos: 0,
            }),
            delivered,
            failed,
        }
    }

    #[test]
    fn the_chart_draws_a_bar_for_each_outcome_of_each_busy_hour() {
        let mut hours = vec![hour(0, 0); 24];
        hours[3] = hour(4, 0);
        hours[23] = hour(2, 2);
        let health = TargetHealth {
            delivered: 6,
            failed: 2,
            hours,
        };
        let svg = chart(&ENGLISH, &health).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("6 delivered"), "{svg}");
        assert!(svg.contains("2 failed"), "{svg}");
        // The busiest hour fills the plot's height.
        assert!(
            svg.contains(&format!("height=\"{}\"", HEIGHT - AXIS)),
            "{svg}"
        );
    }

    #[test]
    fn an_idle_day_draws_no_bar() {
        let health = TargetHealth {
            delivered: 0,
            failed: 0,
            hours: vec![hour(0, 0); 24],
        };
        let svg = chart(&ENGLISH, &health).into_string();
        assert_eq!(svg.matches("<rect").count(), 0, "{svg}");
    }
}
