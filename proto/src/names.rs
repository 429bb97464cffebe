//! Naming rules shared by the broker (which enforces them) and the client
//! (which reports them early).

/// Longest topic or group name, in bytes.
pub const MAX_NAME_LEN: usize = 127;

/// Checks a topic or group name against `[A-Za-z0-9_%-]{1,127}`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("{kind} name must be 1..={MAX_NAME_LEN} bytes, got {}", name.len()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '%' | '-'))) {
        return Err(format!("{kind} name {name:?} has {bad:?}; allowed are [A-Za-z0-9_%-]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn accepts_the_allowed_alphabet_and_refuses_the_rest() {
        assert!(validate_name("topic", "Orders_2024-%RETRY%").is_ok());
        assert!(validate_name("topic", "").is_err());
        assert!(validate_name("topic", &"a".repeat(128)).is_err());
        assert!(validate_name("topic", &"a".repeat(127)).is_ok());
        for bad in ["a b", "a/b", "a.b", "ü", "a\0"] {
            assert!(validate_name("topic", bad).is_err(), "{bad:?}");
        }
    }
}
