//! The one string hash both sides must agree on: 64-bit FNV-1a. The broker
//! stores it as a message's tag hash; clients map sharding keys to queues
//! with it.

/// 64-bit FNV-1a of `text`.
pub fn fnv1a64(text: &str) -> u64 {
    fnv1a64_parts(&[text.as_bytes()])
}

/// 64-bit FNV-1a of the concatenation of `parts`, without building it.
pub fn fnv1a64_parts(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_published_test_vectors() {
        assert_eq!(super::fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a64_parts(&[b"ab", b"", b"c"]), super::fnv1a64("abc"));
    }
}
