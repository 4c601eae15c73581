//! Who may change something through the console (redrive dead letters). Reading is
//! open to whoever reaches the port; a change needs the console's token as a bearer
//! token and proof that the page itself sent it:
//!
//! - the header [`HEADER`], which a cross-site form cannot set and a cross-site script
//!   cannot send without a CORS preflight the console never grants;
//! - an `Origin`, when the browser sends one, naming the host that was asked.
//!
//! Without a token configured, the console is read-only.

use axum::http::{HeaderMap, StatusCode, header};

/// The header the console's page sends with every change.
pub const HEADER: &str = "x-eventpipe-console";

/// Why a change is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token is configured: nothing can be changed here.
    ReadOnly,
    /// Not sent by the console's page (missing header, another origin).
    CrossSite,
    /// No token, or the wrong one.
    Unauthorized,
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ReadOnly | Self::CrossSite => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Self::ReadOnly => "the console is read-only: it was started without a token",
            Self::CrossSite => "not sent by the console's page",
            Self::Unauthorized => "a valid token is needed (Authorization: Bearer TOKEN)",
        }
    }
}

/// Whether the request in `headers` may change something, given the console's `token`.
pub fn check(token: Option<&str>, headers: &HeaderMap) -> Result<(), Denied> {
    if !same_site(headers) {
        return Err(Denied::CrossSite);
    }
    let Some(token) = token else {
        return Err(Denied::ReadOnly);
    };
    let given = (headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match eventpipe_core::token::same(token.as_bytes(), given.as_bytes()) {
        true => Ok(()),
        false => Err(Denied::Unauthorized),
    }
}

fn same_site(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if text(HEADER) != Some("1") {
        return false;
    }
    match (text(header::ORIGIN.as_str()), text(header::HOST.as_str())) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            let host_of = origin.split_once("://").map(|(_, h)| h);
            host_of == Some(host)
        }
        (Some(_), None) => false,
    }
}

/// Whether a request naming `host` (its `Host` header) may be answered by a console
/// reached on loopback (`loopback`: listening there, or through a port-forward). There
/// only loopback names are: a page of another site whose name was re-pointed at
/// 127.0.0.1 (DNS rebinding) would otherwise read the console as its own origin.
pub fn host_allowed(host: Option<&str>, loopback: bool) -> bool {
    if !loopback {
        return true;
    }
    let Some(host) = host else { return false };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// A new random token, from the operating system's secure generator (via UUID v4).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const PAGE: [(&str, &str); 3] = [
        (HEADER, "1"),
        ("host", "127.0.0.1:7070"),
        ("origin", "http://127.0.0.1:7070"),
    ];

    #[test]
    fn the_page_with_the_token_may_change() {
        let h = headers(&[PAGE.as_slice(), &[("authorization", "Bearer s3cret")]].concat());
        assert_eq!(check(Some("s3cret"), &h), Ok(()));
    }

    #[test]
    fn a_missing_or_wrong_token_is_unauthorized() {
        assert_eq!(
            check(Some("s3cret"), &headers(&PAGE)),
            Err(Denied::Unauthorized)
        );
        let wrong = headers(&[PAGE.as_slice(), &[("authorization", "Bearer nope")]].concat());
        assert_eq!(check(Some("s3cret"), &wrong), Err(Denied::Unauthorized));
        assert_eq!(Denied::Unauthorized.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn without_a_token_configured_nothing_changes() {
        let h = headers(&[PAGE.as_slice(), &[("authorization", "Bearer ")]].concat());
        assert_eq!(check(None, &h), Err(Denied::ReadOnly));
        assert_eq!(Denied::ReadOnly.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn another_site_is_refused_even_with_the_token() {
        let bearer = ("authorization", "Bearer s3cret");
        let no_header = headers(&[PAGE[1], PAGE[2], bearer]);
        assert_eq!(check(Some("s3cret"), &no_header), Err(Denied::CrossSite));
        let elsewhere = headers(&[PAGE[0], PAGE[1], ("origin", "https://evil.example"), bearer]);
        assert_eq!(check(Some("s3cret"), &elsewhere), Err(Denied::CrossSite));
        // Tools (curl) send no Origin: the header and the token suffice.
        let tool = headers(&[PAGE[0], PAGE[1], bearer]);
        assert_eq!(check(Some("s3cret"), &tool), Ok(()));
    }

    #[test]
    fn on_loopback_only_loopback_names_are_answered() {
        for ok in [
            "127.0.0.1:7070",
            "localhost:7070",
            "[::1]:7070",
            "localhost",
        ] {
            assert!(host_allowed(Some(ok), true), "{ok}");
        }
        for refused in [Some("evil.example:7070"), Some("evil.example"), None] {
            assert!(!host_allowed(refused, true), "{refused:?}");
        }
        assert!(host_allowed(Some("eventpipe-console.ns.svc:7070"), false));
    }

    #[test]
    fn tokens_are_new_each_time() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
