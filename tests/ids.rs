//! One id grammar: every id a command accepts is a subject token and a KV key
//! everywhere it travels (property test over the whole alphabet and length range,
//! then a sample written for real through a node and a projection).

use jetsource::subjects::{is_id_char, validate_id, validate_kv_key, MAX_ID_LEN};
use proptest::prelude::*;

fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Any string at all: if it is accepted as an id, it works as a subject token
    /// and inside every KV key built from it.
    #[test]
    fn an_accepted_id_is_a_subject_token_and_a_kv_key(id in any::<String>()) {
        if validate_id(&id).is_ok() {
            prop_assert!(is_subject_token(&id));
            prop_assert!(id.len() <= MAX_ID_LEN);
            let row = format!("person.{}", id);
            let instance = format!("hiring.{}", id);
            prop_assert!(validate_kv_key(&row).is_ok());
            prop_assert!(validate_kv_key(&instance).is_ok());
        }
    }

    /// Every string of the alphabet, 1 to MAX_ID_LEN long, is accepted.
    #[test]
    fn every_id_of_the_alphabet_is_accepted(id in "[A-Za-z0-9_=-]{1,256}") {
        prop_assert!(validate_id(&id).is_ok());
    }

    /// Outside the alphabet, or too long, it is refused.
    #[test]
    fn any_other_character_is_refused(prefix in "[a-z]{0,8}", c in any::<char>(), suffix in "[a-z]{0,8}") {
        let id = format!("{prefix}{c}{suffix}");
        prop_assert_eq!(validate_id(&id).is_ok(), is_id_char(c));
    }
}

#[test]
fn the_length_bound_holds_at_the_edge() {
    assert!(validate_id(&"a".repeat(MAX_ID_LEN)).is_ok());
    assert!(validate_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
    assert!(validate_id("").is_err());
}
