//! The console's sessions: kept in this process's memory only (a restart signs everyone out),
//! each keyed by a random id in an `HttpOnly; SameSite=Strict` cookie, holding the API token the
//! person signed in with and the CSRF token of its forms. Sessions end on sign-out, after
//! [`IDLE_LIMIT`] without a request, and [`ABSOLUTE_LIMIT`] after sign-in whatever the use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

/// A session unused this long is gone.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// A session is gone this long after sign-in, used or not.
pub const ABSOLUTE_LIMIT: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; past it the one idle longest is dropped (memory stays bounded).
const MAX_SESSIONS: usize = 10_000;

pub const SESSION_COOKIE: &str = "hookplane_session";
/// The sign-in form's CSRF value, as a cookie (double submit): there is no session yet.
pub const SIGN_IN_COOKIE: &str = "hookplane_sign_in";

/// 32 random bytes as hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether two secrets are equal, in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

struct Session {
    /// The API token; it is never rendered or logged.
    token: String,
    csrf: String,
    signed_in: Instant,
    seen: Instant,
    /// One message shown on the next page (after a redirect).
    flash: Option<String>,
}

/// What a request learns of its session.
#[derive(Clone)]
pub struct SignedIn {
    pub id: String,
    pub token: String,
    pub csrf: String,
}

/// The session store.
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::with_limits(IDLE_LIMIT, ABSOLUTE_LIMIT)
    }

    pub fn with_limits(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            sessions: Mutex::new(HashMap::new()),
            idle,
            absolute,
        }
    }

    /// Starts a session for `token`; returns its id (the cookie's value).
    pub fn start(&self, token: String) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("session lock");
        sessions.retain(|_, s| self.alive(s, now));
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                token,
                csrf: random_token(),
                signed_in: now,
                seen: now,
                flash: None,
            },
        );
        id
    }

    fn alive(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.seen) < self.idle
            && now.duration_since(session.signed_in) < self.absolute
    }

    /// The live session of `id`, marked as used now; an expired one is removed.
    pub fn find(&self, id: &str) -> Option<SignedIn> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("session lock");
        let session = sessions.get_mut(id)?;
        if !self.alive(session, now) {
            sessions.remove(id);
            return None;
        }
        session.seen = now;
        Some(SignedIn {
            id: id.to_owned(),
            token: session.token.clone(),
            csrf: session.csrf.clone(),
        })
    }

    pub fn end(&self, id: &str) {
        self.sessions.lock().expect("session lock").remove(id);
    }

    pub fn set_flash(&self, id: &str, message: String) {
        if let Some(session) = self.sessions.lock().expect("session lock").get_mut(id) {
            session.flash = Some(message);
        }
    }

    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.sessions
            .lock()
            .expect("session lock")
            .get_mut(id)
            .and_then(|s| s.flash.take())
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// A `Set-Cookie` value for the console's cookies: `HttpOnly; SameSite=Strict; Path=/`, and
/// `Secure` when the console is reached over TLS (a proxy in front says so). `max_age` 0 clears.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_session_is_found_with_its_token_and_a_csrf_token() {
        let sessions = Sessions::new();
        let id = sessions.start("tok".into());
        let found = sessions.find(&id).unwrap();
        assert_eq!(found.token, "tok");
        assert_eq!(found.csrf.len(), 64);
        assert_ne!(found.csrf, id);
    }

    #[test]
    fn an_ended_session_is_gone() {
        let sessions = Sessions::new();
        let id = sessions.start("tok".into());
        sessions.end(&id);
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn an_idle_session_expires() {
        let sessions = Sessions::with_limits(Duration::ZERO, ABSOLUTE_LIMIT);
        let id = sessions.start("tok".into());
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn a_session_expires_after_its_absolute_limit_even_when_used() {
        let sessions = Sessions::with_limits(IDLE_LIMIT, Duration::ZERO);
        let id = sessions.start("tok".into());
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn a_flash_is_shown_once() {
        let sessions = Sessions::new();
        let id = sessions.start("tok".into());
        sessions.set_flash(&id, "done".into());
        assert_eq!(sessions.take_flash(&id).as_deref(), Some("done"));
        assert!(sessions.take_flash(&id).is_none());
    }

    #[test]
    fn cookies_are_read_by_name() {
        let header = "a=1; hookplane_session=abc; b=2";
        assert_eq!(cookie(header, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(header, "c"), None);
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_over_tls() {
        let plain = set_cookie(SESSION_COOKIE, "x", IDLE_LIMIT, false);
        assert!(plain.contains("HttpOnly; SameSite=Strict; Path=/"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie(SESSION_COOKIE, "x", IDLE_LIMIT, true).ends_with("; Secure"));
    }
}
