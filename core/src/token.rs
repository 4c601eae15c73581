//! Comparing a presented token with the secret one: webhook bearer tokens, push
//! subscribers' tokens and the console's redrive token.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `presented` is `secret`. Their digests are compared in constant time, so
/// that neither the secret's content nor its length leaks through timing; an empty
/// secret matches nothing.
pub fn same(secret: &[u8], presented: &[u8]) -> bool {
    let same: bool = Sha256::digest(secret)
        .ct_eq(&Sha256::digest(presented))
        .into();
    same && !secret.is_empty()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn only_the_secret_itself_matches() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"s3cret", b"s3cret "));
        assert!(!same(b"s3cret", b""));
    }

    #[test]
    fn an_empty_secret_matches_nothing_not_even_an_empty_token() {
        assert!(!same(b"", b""));
        assert!(!same(b"", b"x"));
    }
}
