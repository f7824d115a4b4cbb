use std::fmt;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
};

use crate::Error;

/// Adds `authorization: Bearer <token>` to every request. Its `Debug` output hides the token.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    pub fn new(token: &str) -> Result<BearerToken, Error> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::InvalidToken)?;
        // Keeps the value out of HPACK tables shared with proxies in between.
        value.set_sensitive(true);
        Ok(BearerToken(value))
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_token_as_a_bearer_authorization_header() {
        let mut bearer = BearerToken::new("s3cret").unwrap();
        let request = bearer.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
    }

    #[test]
    fn replaces_an_authorization_header_already_present() {
        let mut bearer = BearerToken::new("mine").unwrap();
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer theirs".parse().unwrap());
        let request = bearer.call(request).unwrap();
        let values: Vec<_> = request.metadata().get_all("authorization").iter().collect();
        assert_eq!(values, vec!["Bearer mine"]);
    }

    #[test]
    fn refuses_a_token_with_a_line_break() {
        assert!(matches!(
            BearerToken::new("abc\r\nx-evil: 1"),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let bearer = BearerToken::new("s3cret").unwrap();
        assert_eq!(format!("{bearer:?}"), "BearerToken(<redacted>)");
    }
}
