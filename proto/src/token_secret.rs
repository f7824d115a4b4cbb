//! The format of API token secrets, which the control plane makes and both planes read:
//! `hp_tok_<26-character ULID>_<random>`. The secret names its token (`tok_<ULID>`), so whoever
//! checks it looks the token up by id and compares one hash, instead of hashing the presented
//! secret against every token it knows.

/// What every API token secret starts with, before the token's id.
pub const PREFIX: &str = "hp_";

/// The token id (`tok_...`) a presented secret names, if it has the shape of an API token
/// secret. Says nothing of whether the secret is right.
pub fn token_id(secret: &str) -> Option<&str> {
    const ID_LEN: usize = "tok_".len() + 26;
    let rest = secret.strip_prefix(PREFIX)?;
    let id = rest.get(..ID_LEN)?;
    let random = rest.get(ID_LEN..)?.strip_prefix('_')?;
    (id.starts_with("tok_")
        && id[4..].bytes().all(|b| b.is_ascii_alphanumeric())
        && !random.is_empty())
    .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_names_its_token() {
        assert_eq!(
            token_id("hp_tok_01JABCDEFGHJKMNPQRSTVWXYZ0_abc_def-9"),
            Some("tok_01JABCDEFGHJKMNPQRSTVWXYZ0")
        );
    }

    #[test]
    fn bootstrap_tokens_and_garbage_name_no_token() {
        for secret in [
            "hp_admin_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "hp_pub_x",
            "hp_tok_01JABCDEFGHJKMNPQRSTVWXYZ0",
            "hp_tok_01JABCDEFGHJKMNPQRSTVWXYZ0_",
            "hp_tok_01JABCDEFGHJKMNPQRSTVW/YZ0_abc",
            "",
            "hp_tok_é",
        ] {
            assert_eq!(token_id(secret), None, "{secret}");
        }
    }
}
