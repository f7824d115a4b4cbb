//! The web console: server-rendered HTML pages (maud templates, compiled in) on their own
//! listener, for brands and the operator's customer-success team. Every page reads and changes
//! things only through the control plane's gRPC API with the signed-in person's token as the
//! bearer ([`api`]), so the console has exactly that token's rights. Sessions live in memory
//! ([`session`]); every POST carries the session's CSRF token, checked here before any handler
//! runs. Every word a person reads comes from [`text`].

mod api;
mod attempts;
mod channels;
mod health;
mod layout;
mod session;
mod start;
mod text;
mod webhooks;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;
use api::Api;
use session::{SESSION_COOKIE, SIGN_IN_COOKIE, Sessions, SignedIn};
use text::Text;

/// Forms are small; anything larger is refused before parsing.
const FORM_LIMIT: usize = 64 * 1024;

/// Where the console listens: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleListen {
    Off,
    At(SocketAddr),
}

impl FromStr for ConsoleListen {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(ConsoleListen::Off);
        }
        value.parse().map(ConsoleListen::At).map_err(|_| {
            format!("{value:?} is neither `off` nor an address such as 127.0.0.1:8081")
        })
    }
}

/// What the console needs besides the API.
#[derive(Clone, Debug, Default)]
pub struct ConsoleSettings {
    /// The base URL LINE reaches the nodes' ingress at (`https://hooks.example.com`); channels'
    /// webhook URLs are shown under it. Unset: only their paths are shown.
    pub public_ingress_url: Option<String>,
}

/// The console's shared state.
#[derive(Clone)]
struct Console {
    grpc: Channel,
    sessions: Arc<Sessions>,
    settings: Arc<ConsoleSettings>,
    text: &'static Text,
}

/// Serves the console on `listener` until `shutdown`, calling the control plane's gRPC API at
/// `control_addr` (an unspecified address such as `0.0.0.0` is dialled on loopback), over TLS
/// with `control_tls` when the port takes TLS.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control_addr: SocketAddr,
    control_tls: Option<hookplane_client::ClientTls>,
    settings: ConsoleSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut dial = control_addr;
    if dial.ip().is_unspecified() {
        dial.set_ip(match dial.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let grpc = match control_tls {
        Some(tls) => hookplane_client::endpoint(&format!("https://{dial}"), &tls)
            .map_err(|e| Error::ConsoleDial(e.to_string()))?,
        None => Endpoint::from_shared(format!("http://{dial}"))?,
    }
    .connect_lazy();
    let console = Console {
        grpc,
        sessions: Arc::new(Sessions::new()),
        settings: Arc::new(settings),
        text: &text::ENGLISH,
    };
    axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Console)
}

fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(start::start_page))
        .route("/sign-in", get(start::sign_in_page).post(start::sign_in))
        .route("/sign-out", post(start::sign_out))
        .route("/tenants", post(start::create_tenant))
        .route(
            "/tenants/{tenant}",
            get(start::tenant_page).post(start::update_tenant),
        )
        .route(
            "/tenants/{tenant}/notifications",
            get(start::notifications_page),
        )
        .route(
            "/tenants/{tenant}/channels",
            get(channels::channels_page).post(channels::create_channel),
        )
        .route(
            "/channels/{channel}/rotate-secret",
            post(channels::rotate_secret),
        )
        .route("/channels/{channel}/delete", post(channels::delete_channel))
        .route(
            "/channels/{channel}/forwarding-sets",
            post(channels::create_set),
        )
        .route(
            "/forwarding-sets/{set}",
            get(channels::set_page).post(channels::update_set),
        )
        .route(
            "/forwarding-sets/{set}/enabled",
            post(channels::set_enabled),
        )
        .route("/forwarding-sets/{set}/delete", post(channels::delete_set))
        .route(
            "/forwarding-sets/{set}/attempts",
            get(attempts::set_attempts_page),
        )
        .route(
            "/tenants/{tenant}/webhooks",
            get(webhooks::webhooks_page).post(webhooks::create_webhook),
        )
        .route("/webhooks/{webhook}/{action}", post(webhooks::act))
        .route(
            "/webhooks/{webhook}/attempts",
            get(attempts::webhook_attempts_page),
        )
        .route("/deliveries/{delivery}/retry", post(attempts::retry))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .layer(axum::middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        layout::STYLESHEET,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        layout::SCRIPT,
    )
        .into_response()
}

/// Runs around every request: refuses a POST whose form lacks the right CSRF token (403) before
/// any handler sees it, and sets the headers every answer carries (no caching of pages that may
/// hold a secret, no framing, no scripts or styles but the console's own).
async fn guard(State(console): State<Console>, request: Request, next: Next) -> Response {
    let request = if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        let fields = Fields::parse(&bytes);
        let cookies = cookie_header(&parts.headers);
        let expected = if parts.uri.path() == "/sign-in" {
            session::cookie(cookies, SIGN_IN_COOKIE).map(str::to_owned)
        } else {
            session::cookie(cookies, SESSION_COOKIE)
                .and_then(|id| console.sessions.find(id))
                .map(|s| s.csrf)
        };
        // Signing out of a session that already ended changes nothing: no token needed.
        let signing_out_of_nothing = parts.uri.path() == "/sign-out" && expected.is_none();
        let presented = fields.get("csrf");
        let valid = signing_out_of_nothing
            || matches!(&expected, Some(e) if !presented.is_empty() && session::same_secret(e, presented));
        if !valid {
            return refused(console.text);
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The 403 page of a form posted without (or with a stale) CSRF token.
fn refused(t: &'static Text) -> Response {
    let body = layout::page(
        t,
        t.refused_title,
        None,
        None,
        maud::html! {
            p { (t.refused_body) }
            p { a href="/" { (t.nav_start) } }
        },
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

fn cookie_header(headers: &HeaderMap) -> &str {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Whether the person reached the console over TLS (a TLS-ending proxy in front says so): the
/// cookies are then `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A posted form's fields, in order; a name may repeat (checkboxes).
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(body: &[u8]) -> Fields {
        Fields(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; empty when absent.
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or_default()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A signed-in request: its session, the API as that person, the text, and the flash message
/// a redirect left. A request without a live session is sent to the sign-in page.
struct Visit {
    console: Console,
    session: SignedIn,
    api: Api,
    t: &'static Text,
    flash: Option<String>,
}

impl FromRequestParts<Console> for Visit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let session = session::cookie(cookie_header(&parts.headers), SESSION_COOKIE)
            .and_then(|id| console.sessions.find(id))
            .ok_or_else(|| Redirect::to("/sign-in").into_response())?;
        let flash = console.sessions.take_flash(&session.id);
        Ok(Visit {
            api: Api::new(console.grpc.clone(), &session.token),
            console: console.clone(),
            session,
            t: console.text,
            flash,
        })
    }
}

impl Visit {
    /// A page of this visit.
    fn page(&self, title: &str, body: Markup) -> Response {
        layout::page(
            self.t,
            title,
            Some(&self.session),
            self.flash.as_deref(),
            body,
        )
        .into_response()
    }

    /// A page answering a refused form: 422 so the browser does not treat it as success.
    fn refused_form(&self, title: &str, body: Markup) -> Response {
        (StatusCode::UNPROCESSABLE_ENTITY, self.page(title, body)).into_response()
    }

    /// Back to `to` (POST, redirect, GET), with `message` shown there.
    fn done(&self, to: &str, message: String) -> Response {
        self.console.sessions.set_flash(&self.session.id, message);
        Redirect::to(to).into_response()
    }

    /// A page for an API refusal of a read (the resource is gone, or the token may not see it).
    fn failed(&self, status: &tonic::Status) -> Response {
        let code = match status.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        let message = api::readable(self.t, status);
        (
            code,
            self.page(
                self.t.error_title,
                maud::html! {
                    (layout::error_box(Some(&message)))
                    p { a href="/" { (self.t.nav_start) } }
                },
            ),
        )
            .into_response()
    }
}

/// The body of a form POST, already size-checked by [`guard`].
fn fields(body: &Bytes) -> Fields {
    Fields::parse(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_flag_takes_an_address_or_off() {
        assert_eq!("off".parse::<ConsoleListen>(), Ok(ConsoleListen::Off));
        assert_eq!(
            "127.0.0.1:8081".parse::<ConsoleListen>(),
            Ok(ConsoleListen::At("127.0.0.1:8081".parse().unwrap()))
        );
        assert!("localhost".parse::<ConsoleListen>().is_err());
    }

    #[test]
    fn form_fields_keep_repeated_names() {
        let fields = Fields::parse(b"a=1&t=x&t=y+z&csrf=%20k%20");
        assert_eq!(fields.get("a"), "1");
        assert_eq!(fields.all("t"), ["x", "y z"]);
        assert_eq!(fields.get("csrf"), "k");
        assert_eq!(fields.get("missing"), "");
    }
}
