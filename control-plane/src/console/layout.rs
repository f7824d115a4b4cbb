//! The page shell every console page shares (head, navigation, sign-out, flash message), the
//! stylesheet and the one small script (the copy button), and the small pieces pages repeat:
//! error boxes, CSRF fields, times.

use maud::{DOCTYPE, Markup, html};
use prost_types::Timestamp;

use super::session::SignedIn;
use super::text::Text;

/// A hand-written stylesheet: one column on phones, wider cards on desktops, no framework.
pub const STYLESHEET: &str = r#"
*,*::before,*::after{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:#1d2330;background:#f4f6f9}
header{background:#1d2b4f;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1.2rem;align-items:center}
header a{color:#fff}
header .brand{font-weight:700;margin-right:auto;text-decoration:none}
header form{margin:0}
main{max-width:64rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
h3{font-size:1.05rem;margin:.2rem 0 .5rem}
h1,h2,h3,p,td,dd{overflow-wrap:anywhere}
a{color:#1c4fd8}
a:focus,button:focus,input:focus,select:focus,textarea:focus{outline:3px solid #f4b400;outline-offset:1px}
.card{background:#fff;border:1px solid #d8dde6;border-radius:8px;padding:1rem;margin:0 0 1rem}
.row{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:flex-end}
.row>*{flex:1 1 12rem}
.row>.narrow{flex:0 0 auto}
label{display:block;font-weight:600;font-size:.9rem;margin:.4rem 0 .15rem}
input[type=text],input[type=url],input[type=password],input[type=date],input[type=email],select,textarea{width:100%;padding:.45rem .5rem;border:1px solid #9aa4b5;border-radius:6px;font:inherit;background:#fff}
fieldset{border:1px solid #d8dde6;border-radius:6px;margin:.5rem 0;padding:.3rem .8rem .6rem}
fieldset label{display:inline;font-weight:400;margin:0}
fieldset .choice{display:block;margin:.25rem 0}
.why{color:#6b7280;font-size:.85rem}
button{font:inherit;padding:.45rem .9rem;border-radius:6px;border:1px solid #1c4fd8;background:#1c4fd8;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1c4fd8}
button.danger{background:#b42318;border-color:#b42318}
button.link{background:none;border:none;color:#fff;text-decoration:underline;padding:0}
.actions{display:flex;flex-wrap:wrap;gap:.4rem .8rem;margin:.5rem 0;align-items:center}
.card>h2:first-child{margin-top:0}
.actions form{margin:0}
.error{background:#fdecea;border:1px solid #b42318;color:#7a1b12;border-radius:6px;padding:.5rem .75rem;margin:.5rem 0}
.flash{background:#e7f6ec;border:1px solid #1a7f37;color:#0f5223;border-radius:6px;padding:.5rem .75rem;margin:0 0 1rem}
.secret,code.url{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all;background:#f0f2f6;padding:.15rem .35rem;border-radius:4px}
.badge{display:inline-block;font-size:.8rem;border-radius:999px;padding:0 .55rem;border:1px solid currentColor}
.ok{color:#1a7f37}.bad{color:#b42318}.muted{color:#6b7280}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #e4e7ec;vertical-align:top}
.table{overflow-x:auto}
pre{white-space:pre-wrap;word-break:break-all;background:#f0f2f6;padding:.5rem;border-radius:6px;max-height:12rem;overflow:auto}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.3rem 0}
dt{font-weight:600}dd{margin:0}
svg.chart{width:100%;max-width:32rem;height:auto}
@media (max-width:40rem){main{padding:.5rem}.card{padding:.75rem}dl{grid-template-columns:1fr}}
"#;

/// The copy button: shown only where the clipboard API works; the URL stays selectable anyway.
pub const SCRIPT: &str = r#"
document.querySelectorAll('button[data-copy]').forEach(function (b) {
  if (!navigator.clipboard) return;
  b.hidden = false;
  b.addEventListener('click', function () {
    navigator.clipboard.writeText(b.dataset.copy).then(function () {
      b.textContent = b.dataset.copied;
    });
  });
});
"#;

/// A whole page: `title`, the navigation of a signed-in person (or none), and `body`.
pub fn page(
    t: &Text,
    title: &str,
    session: Option<&SignedIn>,
    flash: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(t.language) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (t.product) }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                header {
                    a.brand href="/" { (t.product) }
                    @if let Some(session) = session {
                        nav { a href="/" { (t.nav_start) } }
                        form method="post" action="/sign-out" {
                            (csrf_field(session))
                            button.link type="submit" { (t.sign_out) }
                        }
                    }
                }
                main {
                    @if let Some(flash) = flash {
                        p.flash role="status" { (flash) }
                    }
                    h1 { (title) }
                    (body)
                }
                script src="/assets/console.js" defer {}
            }
        }
    }
}

/// The hidden CSRF field every form of a signed-in page carries.
pub fn csrf_field(session: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// An API error next to the form it answers.
pub fn error_box(error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
    }
}

/// A URL to paste somewhere, with a copy button.
pub fn copyable(t: &Text, url: &str) -> Markup {
    html! {
        code.url { (url) }
        " "
        button.secondary type="button" data-copy=(url) data-copied=(t.copied) hidden { (t.copy) }
    }
}

/// `2026-12-06 12:51 UTC`, or an empty string for an unset time.
pub fn time(at: Option<&Timestamp>) -> String {
    let Some(at) = at else {
        return String::new();
    };
    let Ok(system) = std::time::SystemTime::try_from(*at) else {
        return String::new();
    };
    let text = humantime::format_rfc3339_seconds(system).to_string();
    // `2026-12-06T12:51:49Z` → `2026-12-06 12:51 UTC`
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(clock)) => format!("{date} {clock} UTC"),
        _ => text,
    }
}

/// The date part of a time, as an `<input type=date>` value.
pub fn date_value(at: Option<&Timestamp>) -> String {
    time(at).get(..10).unwrap_or_default().to_owned()
}

/// `YYYY-MM-DD` (end of that day, UTC) as a timestamp.
pub fn parse_date(value: &str) -> Option<Timestamp> {
    let at = humantime::parse_rfc3339(&format!("{}T23:59:59Z", value.trim())).ok()?;
    Some(Timestamp::from(at))
}

/// A script-free confirmation: the same POST again with `confirm=yes`, or back.
pub fn confirmation(
    t: &Text,
    session: &SignedIn,
    question: &str,
    action: &str,
    fields: &[(&str, &str)],
    back: &str,
) -> Markup {
    html! {
        div.card {
            p { (question) }
            div.actions {
                form method="post" action=(action) {
                    (csrf_field(session))
                    @for (name, value) in fields {
                        input type="hidden" name=(name) value=(value);
                    }
                    input type="hidden" name="confirm" value="yes";
                    button.danger type="submit" { (t.delete_confirm) }
                }
                a href=(back) { (t.cancel) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_minutes() {
        let at = Timestamp {
            seconds: 1_796_561_509,
            nanos: 0,
        };
        assert_eq!(time(Some(&at)), "2026-12-06 12:51 UTC");
        assert_eq!(date_value(Some(&at)), "2026-12-06");
        assert_eq!(time(None), "");
    }

    #[test]
    fn a_date_means_the_end_of_that_day() {
        let at = parse_date("2026-12-06").unwrap();
        assert_eq!(time(Some(&at)), "2026-12-06 23:59 UTC");
        assert!(parse_date("06/12/2026").is_none());
    }
}
